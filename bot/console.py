"""The console front end: alerts printed to stdout and a terminal chat on the command core."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, tzinfo
from pathlib import Path
from typing import TextIO

from bot.alert_message import digest_reply, group_reply
from bot.commands import CommandContext, CommandCore, save_image
from bot.reply import Reply
from engine.alerting.delivery import SentMessage
from engine.alerting.notify import Notification

_CONTROL = {c: " " for c in range(32) if c not in (10,)} | {127: " "}


def render_text(reply: Reply) -> str:
    """A reply as plain terminal text (control characters from signals neutralised)."""
    lines = [("⚠ " if reply.error else "") + _clean(reply.title)] if reply.title else []
    if reply.fields or reply.links:
        named = [*reply.fields, *((name.lower(), url) for name, url in reply.links)]
        width = max(len(name) for name, _ in named)
        lines += [f"  {name:<{width}}  {_clean(value)}" for name, value in named]
    lines += [_indent(_clean(block)) for block in reply.blocks]
    if reply.buttons:
        lines.append("  actions: " + " | ".join(f"/{b.action}" for b in reply.buttons))
    if reply.image:
        lines.append(f"  chart: {reply.image}")
    if reply.footer:
        lines.append(f"  — {_clean(reply.footer)}")
    return "\n".join(lines)


def _clean(text: str) -> str:
    return text.translate(_CONTROL)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


class ConsoleNotifier:
    """The `ChatNotifier` for a terminal: alert group messages printed (stdout of `serve` and `demo`)."""

    platform = "console"

    def __init__(self, out: TextIO | None = None, tz: tzinfo = UTC, chart_dir: Path | None = None) -> None:
        self.out = out or sys.stdout
        self.tz = tz
        self.chart_dir = chart_dir
        self._printed = 0

    async def post(self, chat: str, note: Notification, chart: bytes | None) -> SentMessage:
        reply = group_reply(note, self.tz)
        if chart and self.chart_dir is not None:
            path = self.chart_dir / f"alert-{note.group_id}.png"
            await asyncio.to_thread(save_image, path, chart)
            reply = replace(reply, image=path)
        self._print(reply)
        return SentMessage(self._next_id(), "text")

    async def update(self, chat: str, message: SentMessage, note: Notification) -> SentMessage:
        reply = group_reply(note, self.tz)
        self._print(replace(reply, title=f"(update: {note.reason}) {reply.title}"))
        return message

    async def find(self, chat: str, group_id: str) -> SentMessage | None:
        return None

    async def digest(
        self, chat: str, notes: Sequence[Notification], message: SentMessage | None
    ) -> SentMessage:
        self._print(digest_reply(notes, self.tz))
        return message or SentMessage(self._next_id(), "digest")

    async def post_brief(self, chat: str, reply: Reply) -> None:
        self._print(reply)

    def _print(self, reply: Reply) -> None:
        self.out.write(f"\n{render_text(reply)}\n")
        self.out.flush()

    def _next_id(self) -> str:
        self._printed += 1
        return str(self._printed)


class StdinLines:
    """Lines from file descriptor 0, read without Python's buffered stdin.

    A thread blocked in `input()` holds sys.stdin's lock, and the interpreter aborts at exit
    (after Ctrl-C) trying to take it; `os.read` holds no lock.
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._pending = b""

    def __call__(self) -> str:
        while b"\n" not in self._pending:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                if self._pending:
                    line, self._pending = self._pending, b""
                    return line.decode(errors="replace")
                raise EOFError
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace")


def _read_in_background(read_line: Callable[[], str]) -> asyncio.Queue[str | None]:
    """Lines from `read_line` in a daemon thread (None at end of input).

    Not the loop's executor: a thread blocked in input() would hold up the process's exit
    after Ctrl-C until Enter; a daemon thread is simply left behind.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def run() -> None:
        while True:
            try:
                line: str | None = read_line()
            except (EOFError, OSError, ValueError):  # end of input, or stdin closed under us
                line = None
            try:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            except RuntimeError:  # the loop has closed: the console is gone
                return
            if line is None:
                return

    threading.Thread(target=run, name="console-input", daemon=True).start()
    return queue


async def _next_line(lines: asyncio.Queue[str | None], stop: asyncio.Event) -> str | None:
    getter = asyncio.ensure_future(lines.get())
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    getter.cancel()
    stopper.cancel()
    return getter.result() if getter in done else None


def console_context() -> CommandContext:
    """The local user, who owns the terminal and so gets every role."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "console"
    return CommandContext("console", str(os.getuid()), name, "console", role="admin")


async def run_repl(
    core: CommandCore,
    stop: asyncio.Event,
    *,
    read_line: Callable[[], str] | None = None,
    out: TextIO | None = None,
) -> None:
    """Read commands until EOF, `quit` or `stop`; print each reply."""
    out = out or sys.stdout
    ctx = console_context()
    out.write("SigOps console: /help for commands, a plain question to ask, Ctrl-D to quit.\n")
    out.flush()
    lines = _read_in_background(read_line or StdinLines())
    while not stop.is_set():
        line = await _next_line(lines, stop)
        if line is None:  # end of input, or stopped (Ctrl-C)
            break
        if line.strip().lower() in {"quit", "exit", "/quit", "/exit"}:
            break
        if not line.strip():
            continue
        reply = await core.handle(ctx, line)
        out.write(render_text(reply) + "\n")
        out.flush()
    stop.set()
