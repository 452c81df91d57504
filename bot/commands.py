"""The one command core every front end (console, Telegram, Slack) calls.

A front end parses who is talking and what they typed, calls `CommandCore.handle`,
and renders the `Reply` it gets back. Nothing here knows about any chat platform.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from bot.reply import Reply, error_reply
from engine.alerts import Alert
from engine.answer import RetrievalAnswerer
from engine.delivery import DeliveryProblem
from engine.detect import Anomaly
from engine.errors import RecordUnavailable
from engine.text import duration

log = logging.getLogger(__name__)

_STATE_ICON = {"firing": "🔥", "resolved": "✅"}


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who is asking, from where, with which role."""

    platform: str  # console | telegram | slack
    user_id: str
    user_name: str
    chat_id: str
    role: str = "viewer"


class StatusSource(Protocol):
    """What `status` reads."""

    async def firing_alerts(self, limit: int = 50) -> list[Alert]: ...

    async def recent_anomalies(self, since: float, limit: int = 50) -> list[Anomaly]: ...


class DeliverySource(Protocol):
    """What `status` reads about delivery to the chats."""

    async def delivery_problems(self, since: float) -> list[DeliveryProblem]: ...

    async def outbox_backlog(self) -> int: ...


Handler = Callable[["CommandCore", CommandContext, list[str]], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str
    summary: str
    run: Handler


class CommandCore:
    """Parses a command line and runs it."""

    def __init__(
        self,
        record: StatusSource,
        answerer: RetrievalAnswerer,
        clock: Callable[[], float] = time.time,
        delivery: DeliverySource | None = None,
    ) -> None:
        self.record = record
        self.answerer = answerer
        self.clock = clock
        self.delivery = delivery

    async def handle(self, ctx: CommandContext, text: str) -> Reply:
        """Run one line of input: `/status`, `status`, or a plain question."""
        line = text.strip()
        if not line:
            return await _help(self, ctx, [])
        try:
            words = shlex.split(line.lstrip("/"))
        except ValueError as exc:
            return error_reply(f"Could not read that: {exc}")
        name = words[0].lower().split("@", 1)[0] if words else ""
        command = COMMANDS.get(name)
        if command is None:
            if line.startswith("/"):
                return error_reply(f"Unknown command /{name}.", "/help")
            return await _ask(self, ctx, [line])
        try:
            return await command.run(self, ctx, words[1:])
        except RecordUnavailable as exc:
            log.warning("command %s failed: %s", name, exc)
            return error_reply("The record is unavailable right now; try again in a minute.")


async def _status(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    if args:
        return error_reply("status takes no arguments.", COMMANDS["status"].usage)
    now = core.clock()
    alerts = await core.record.firing_alerts(limit=20)
    anomalies = await core.record.recent_anomalies(now - 3600, limit=200)
    blocks = [alert_line(a, now) for a in alerts] or ["No alerts firing. All quiet."]
    top: dict[str, Anomaly] = {}
    for anomaly in anomalies:
        if anomaly.series not in top or anomaly.score > top[anomaly.series].score:
            top[anomaly.series] = anomaly
    if top:
        ranked = sorted(top.values(), key=lambda a: a.score, reverse=True)[:5]
        blocks.append(
            "Most anomalous in the last hour:\n"
            + "\n".join(f"• {a.series} score {a.score:.2f}: {a.explanation}" for a in ranked)
        )
    if core.delivery is not None:
        blocks += await _delivery_lines(core.delivery, now)
    return Reply(title=f"{len(alerts)} alert(s) firing", blocks=tuple(blocks))


async def _delivery_lines(delivery: DeliverySource, now: float) -> list[str]:
    """Chats that alerts could not reach in the last day, and a backlog worth mentioning."""
    lines = [
        f"⚠ {p.platform} {p.chat}: {p.failed} alert message(s) not delivered — {p.last_error}"
        for p in await delivery.delivery_problems(now - 86400)
    ]
    backlog = await delivery.outbox_backlog()
    if backlog > 20:
        lines.append(f"⏳ {backlog} alert messages waiting to be sent (chat rate limits or an outage)")
    return ["Delivery problems:\n" + "\n".join(lines)] if lines else []


async def _ask(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    question = " ".join(args).strip()
    if not question:
        return error_reply("What would you like to know?", COMMANDS["ask"].usage)
    answer = await core.answerer.answer(question)
    cites = tuple(f"[{e.id}] {_when(e.ts)} {e.kind}: {e.line}" for e in answer.evidence)
    return Reply(
        title=answer.summary[0],
        blocks=(*answer.summary[1:], *(("Evidence:\n" + "\n".join(cites),) if cites else ())),
        footer=f"{answer.mode} answer: computed from stored alerts and anomalies, no language model",
    )


async def _help(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    lines = [f"/{c.usage} — {c.summary}" for c in COMMANDS.values()]
    return Reply(title="SigOps commands", blocks=("\n".join(lines), "Or just type a question."))


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("status", "status", "firing alerts and the most anomalous series", _status),
        Command("ask", "ask <question>", "answer from the stored signals, with evidence ids", _ask),
        Command("help", "help", "this list", _help),
    )
}


def alert_line(alert: Alert, now: float) -> str:
    """One alert as a compact line: state, id, severity, title, score, age."""
    icon = _STATE_ICON.get(alert.status, "•")
    age = duration(now - alert.started_at)
    return (
        f"{icon} [{alert.id}] {alert.severity.upper()} {alert.title} — score {alert.score:.2f}, "
        f"{alert.status} for {age}"
    )


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
