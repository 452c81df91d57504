"""The console front end: alerts printed to stdout and a terminal chat on the command core."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from bot.commands import CommandContext, CommandCore, alert_reply
from bot.reply import Reply
from engine.alerts import Alert

_CONTROL = {c: " " for c in range(32) if c not in (10,)} | {127: " "}


def render_text(reply: Reply) -> str:
    """A reply as plain terminal text (control characters from signals neutralised)."""
    lines = [("⚠ " if reply.error else "") + _clean(reply.title)] if reply.title else []
    lines += [_indent(_clean(block)) for block in reply.blocks]
    if reply.fields:
        width = max(len(name) for name, _ in reply.fields)
        lines += [f"  {name:<{width}}  {_clean(value)}" for name, value in reply.fields]
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


class ConsoleSink:
    """Alert notifications written to a stream (stdout of `serve` and `demo`)."""

    def __init__(self, out: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self.out = out or sys.stdout
        self.clock = clock

    async def notify(self, alert: Alert, change: str) -> None:
        text = render_text(alert_reply(alert, change, self.clock()))
        self.out.write(f"\n{text}\n")
        self.out.flush()


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
    read_line: Callable[[], str] = input,
    out: TextIO | None = None,
) -> None:
    """Read commands until EOF, `quit` or `stop`; print each reply."""
    out = out or sys.stdout
    ctx = console_context()
    out.write("SigOps console: /help for commands, a plain question to ask, Ctrl-D to quit.\n")
    out.flush()
    while not stop.is_set():
        try:
            line = await asyncio.to_thread(read_line)
        except EOFError:
            break
        if line.strip().lower() in {"quit", "exit", "/quit", "/exit"}:
            break
        if not line.strip():
            continue
        reply = await core.handle(ctx, line)
        out.write(render_text(reply) + "\n")
        out.flush()
    stop.set()
