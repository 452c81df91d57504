"""The one command core every front end (console, Telegram, Slack) calls.

A front end parses who is talking and what they typed, calls `CommandCore.handle`,
and renders the `Reply` it gets back. Nothing here knows about any chat platform.
Commands that change alerts need the `responder` role (or `admin`).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import Protocol

from bot.reply import Reply, error_reply
from engine.alerting.actions import ActionResult, Actor, AlertActions
from engine.alerting.alerts import Alert
from engine.alerting.delivery import DeliveryProblem
from engine.alerting.risk import ChangeRef
from engine.alerting.routing import alert_labels
from engine.alerting.silences import Silence, UpstreamFailed
from engine.answers.answer import Answer, RetrievalAnswerer
from engine.answers.narrate import ModelAnswerer, Partial
from engine.brief.content import Brief, brief_lines, build_brief, narrate
from engine.chart import render_chart, render_small_multiples, unit_of
from engine.detection.detect import Anomaly
from engine.errors import RecordUnavailable
from engine.supervise import Supervisor
from engine.text import clock as _clock
from engine.text import duration, fmt, parse_duration

log = logging.getLogger(__name__)

ROLES = ("viewer", "responder", "admin")
_RANK = {name: rank for rank, name in enumerate(ROLES)}
_STATE_ICON = {"firing": "🔥", "acknowledged": "👀", "silenced": "🔕", "resolved": "✅"}
MAX_CHART_RANGE_S = 14 * 86400


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who is asking, from where, with which role."""

    platform: str  # console | telegram | slack
    user_id: str
    user_name: str
    chat_id: str
    role: str = "viewer"
    progress: Partial | None = field(default=None, compare=False)  # where a streamed answer fills in

    @property
    def actor(self) -> Actor:
        return Actor(self.platform, self.user_id, self.user_name, self.chat_id)


class RecordSource(Protocol):
    """What the read-only commands read from the record."""

    async def firing_alerts(self, limit: int = 50) -> list[Alert]: ...

    async def alerts_since(self, since: float, limit: int = 200) -> list[Alert]: ...

    async def recent_anomalies(self, since: float, limit: int = 50) -> list[Anomaly]: ...

    async def series_points(
        self, series: str, since: float, limit: int = 20_000
    ) -> list[tuple[float, float]]: ...

    async def series_anomalies(self, series: str, since: float, limit: int = 2_000) -> list[Anomaly]: ...

    async def series_named(self, text: str, limit: int = 10) -> list[str]: ...

    async def changes_in(self, since: float, until: float) -> list[ChangeRef]: ...

    async def latest_labels(self, series: str) -> dict[str, str]: ...


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
    role: str = "viewer"

    @property
    def mutating(self) -> bool:
        return self.role != "viewer"


class UsageError(ValueError):
    """Arguments that do not fit the command; the reply shows its usage."""


class CommandCore:
    """Parses a command line, checks the role, and runs it."""

    def __init__(
        self,
        record: RecordSource,
        answerer: RetrievalAnswerer,
        clock: Callable[[], float] = time.time,
        delivery: DeliverySource | None = None,
        actions: AlertActions | None = None,
        chart_dir: Path | None = None,
        tz: tzinfo = UTC,
        narrator: ModelAnswerer | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.narrator = narrator
        self.supervisor = supervisor
        self.record = record
        self.answerer = answerer
        self.clock = clock
        self.delivery = delivery
        self.actions = actions
        self.chart_dir = chart_dir
        self.tz = tz

    def command_of(self, text: str) -> Command | None:
        """The command a line would run (None: a question)."""
        words = text.strip().lstrip("/").split(maxsplit=1)
        return COMMANDS.get(words[0].lower().split("@", 1)[0]) if words else None

    def is_question(self, text: str) -> bool:
        """Whether a line is a question (not a command, nor one word that is a command mistyped)."""
        return self.command_of(text) is None and _mistyped(text) is None

    async def handle(self, ctx: CommandContext, text: str) -> Reply:
        """Run one line of input: `/status`, `status`, or a plain question."""
        line = text.strip()
        if not line:
            return await _help(self, ctx, [])
        head, _, rest = line.lstrip("/").partition(" ")
        name = head.lower().split("@", 1)[0]
        command = COMMANDS.get(name)
        if command is None:
            if line.startswith("/"):
                return error_reply(f"Unknown command /{name}.", "/help")
            meant = _mistyped(line)
            if meant is not None:
                return error_reply(f"Unknown command {name!r}: did you mean {meant}?", COMMANDS[meant].usage)
            return await _ask(self, ctx, [line])  # free text is never split like a shell line
        words = [name, rest.strip()] if command.name == "ask" else _words(line.lstrip("/"))
        if _RANK.get(ctx.role, 0) < _RANK[command.role]:
            log.warning(
                "%s (%s:%s) may not %s: role %s", ctx.user_name, ctx.platform, ctx.user_id, name, ctx.role
            )
            return error_reply(
                f"{command.name} needs the {command.role} role; you are {ctx.role}. "
                "An admin can grant it (`whoami` shows your id)."
            )
        try:
            return await command.run(self, ctx, words[1:])
        except UsageError as exc:
            return error_reply(str(exc), command.usage)
        except RecordUnavailable as exc:
            log.warning("command %s failed: %s", name, exc)
            return error_reply("The record is unavailable right now; try again in a minute.")

    def need_actions(self) -> AlertActions:
        if self.actions is None:
            raise UsageError("alert actions are not available in this mode (run `sigops serve`)")
        return self.actions


def _words(line: str) -> list[str]:
    """A command line's words: quotes group words (`silence service="pay" 2h "db failover"`);
    a lone apostrophe (`resolve 3f9a it's fixed`) is just a character."""
    try:
        return shlex.split(line)
    except ValueError:  # unbalanced quotes: plain words rather than a refusal
        return line.split()


# ---- read-only commands ---------------------------------------------------------------------


async def _status(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    _no_args(args)
    now = core.clock()
    alerts = await core.record.firing_alerts(limit=50)
    silences = await core.actions.store.active_silences(now) if core.actions else []
    lines = [alert_line(a, now, _silenced_until(a, silences, now)) for a in alerts[:20]]
    if len(alerts) > 20:
        lines.append(f"… and {len(alerts) - 20} more")
    blocks = ["\n".join(lines) if lines else "No alerts firing. All quiet."]
    anomalies = await core.record.recent_anomalies(now - 3600, limit=200)
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
    if core.supervisor is not None:
        blocks += _background_lines(core.supervisor)
    acked = sum(1 for a in alerts if a.acked_by)
    title = f"{len(alerts)} alert(s) open" + (f", {acked} acknowledged" if acked else "")
    return Reply(title=title, blocks=tuple(blocks))


def _background_lines(supervisor: Supervisor) -> list[str]:
    """Background loops that are down, and loops or jobs that have failed since start."""
    down = supervisor.problems()
    lines = [f"⚠ {name} is not running: {why}" for name, why in down.items()]
    lines += [h.line() for h in supervisor.health.values() if h.failures and h.name not in down]
    return ["Background work:\n" + "\n".join(lines)] if lines else []


def _silenced_until(alert: Alert, silences: list[Silence], now: float) -> float | None:
    labels = alert_labels(alert)
    ends = [s.ends_at for s in silences if s.mutes(labels, now)]
    return max(ends) if ends else None


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
        raise UsageError("What would you like to know?")
    if core.narrator is None:
        answer = await core.answerer.answer(question)
        return Reply(
            title=answer.summary[0],
            blocks=(*answer.summary[1:], *_evidence_block(answer, core.tz)),
            footer=f"{answer.mode} answer: computed from stored alerts and anomalies, no language model",
        )
    result = await core.narrator.answer(question, ctx.progress)
    found = result.retrieval
    if result.mode == "model":
        model = core.narrator.model.name if core.narrator.model else "the model"
        footer = f"written by {model} from {len(found.evidence)} evidence item(s) in the record"
    else:
        footer = f"retrieval-only answer, computed from the record: {result.note}"
    notes = (result.note,) if result.mode == "model" and result.note else ()
    return Reply(
        title=f"Answer · {_scope(found)}",
        blocks=(result.text, *notes, *_evidence_block(found, core.tz)),
        footer=footer,
    )


def _evidence_block(answer: Answer, tz: tzinfo) -> tuple[str, ...]:
    """The evidence, its times in the same zone as the summary, labelled."""
    cites = [f"[{e.id}] {_when(e.ts, tz)} {e.kind}: {e.line}" for e in answer.evidence]
    return ("Evidence:\n" + "\n".join(cites),) if cites else ()


def _scope(answer: Answer) -> str:
    window = answer.window or f"last {answer.window_s / 3600:g} h"
    return f"{window}, " + (", ".join(answer.services) or "all services")


async def _brief(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    _no_args(args)
    now = core.clock()
    return await compose_brief(core, now - 86400, now)


async def compose_brief(core: CommandCore, since: float, until: float) -> Reply:
    """The brief of a window: the structured facts, a chart of the top series, the model's short narrative."""
    silences = await core.actions.store.active_silences(until) if core.actions else []
    brief = await build_brief(core.record, since, until, core.tz, silences)
    model = core.narrator.model if core.narrator else None
    timeout = core.narrator.timeout_s if core.narrator else 60.0
    narrative, note = await narrate(model, brief, core.tz, timeout)
    image = await _brief_chart(core, brief)
    return brief_reply(brief, core.tz, narrative, note, image, model.name if model and narrative else None)


async def _brief_chart(core: CommandCore, brief: Brief) -> Path | None:
    panels = []
    for top in brief.top[:4]:
        points = await core.record.series_points(top.series, brief.since)
        anomalies = await core.record.series_anomalies(top.series, brief.since)
        panels.append((top.series, points, anomalies))
    try:
        png = await asyncio.to_thread(render_small_multiples, panels, core.tz)
    except ValueError:
        return None
    path = (core.chart_dir or Path("charts")) / f"brief-{int(brief.until)}.png"
    await asyncio.to_thread(save_image, path, png)
    return path


def brief_reply(
    brief: Brief,
    tz: tzinfo,
    narrative: str = "",
    note: str = "",
    image: Path | None = None,
    model: str | None = None,
) -> Reply:
    """The brief as a Reply: the headline, the narrative if any, then a block per section."""
    since = datetime.fromtimestamp(brief.since, tz).strftime("%a %H:%M")
    until = datetime.fromtimestamp(brief.until, tz).strftime("%a %H:%M %Z")
    sections = tuple(
        f"{title}:\n" + "\n".join(f"• {line}" for line in lines) for title, lines in brief_lines(brief, tz)
    )
    lead = (narrative,) if narrative else ()
    told = (
        f"summary by {model}" + (f" ({note})" if note else "")
        if model
        else "structured brief"
        + (f" (no narrative: {note})" if note and note != "nothing to narrate" else "")
    )
    return Reply(
        title=f"☀️ Brief · {brief.headline}",
        blocks=(*lead, *sections),
        image=image,
        footer=f"{since} – {until}, from the record · {told}",
    )


async def _chart(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    if not 1 <= len(args) <= 2:
        raise UsageError("chart takes a series and an optional range.")
    span = _duration(args[1]) if len(args) == 2 else 6 * 3600
    if span > MAX_CHART_RANGE_S:
        raise UsageError("a chart covers at most 14d.")
    series = await _series(core, args[0])
    now = core.clock()
    points = await core.record.series_points(series, now - span)
    if len(points) < 2:
        return error_reply(f"{series} has no points in the last {duration(span)}.")
    anomalies = await core.record.series_anomalies(series, now - span)
    png = await asyncio.to_thread(
        partial(render_chart, series, points, anomalies, (), core.tz, unit=unit_of(series))
    )
    directory = core.chart_dir or Path("charts")
    path = directory / f"{series.replace('/', '_')}-{int(now)}.png"
    await asyncio.to_thread(save_image, path, png)
    low, high = min(v for _, v in points), max(v for _, v in points)
    return Reply(
        title=f"{series}, last {duration(span)}",
        fields=(
            ("points", str(len(points))),
            ("range", f"{fmt(low)} – {fmt(high)}"),
            ("anomalous points", str(len(anomalies))),
        ),
        image=path,
    )


async def _series(core: CommandCore, text: str) -> str:
    names = await core.record.series_named(text)
    exact = [n for n in names if n.lower() == text.lower()]
    if exact:
        return exact[0]
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError(f"No series matches {text!r}.")
    raise UsageError(f"{text!r} matches several series: {', '.join(names)}.")


async def _silences(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    _no_args(args)
    now = core.clock()
    actions = core.need_actions()
    active = await actions.store.active_silences(now)
    lines = [
        f"[{s.id}] {s.matcher_text} until {_clock(s.ends_at, core.tz)} ({duration(s.ends_at - now)} left), "
        f"by {s.author}" + (f": {s.comment}" if s.comment else "")
        for s in active
    ]
    blocks = ["\n".join(lines)] if lines else []
    theirs = 0
    if actions.upstream is not None:
        ours = {i for s in active for i in s.upstream_ids}
        try:
            upstream = [u for u in await actions.upstream.active() if u.id not in ours]
        except UpstreamFailed as exc:
            blocks.append(f"Alertmanager's own silences could not be read: {exc}")
        else:
            theirs = len(upstream)
            if upstream:
                blocks.append(
                    "In Alertmanager:\n"
                    + "\n".join(
                        f"[{u.id[:8]}] {u.matcher_text} until {_clock(u.ends_at, core.tz)}, by {u.author}"
                        + (f": {u.comment}" if u.comment else "")
                        for u in upstream
                    )
                )
    if not lines and not theirs:
        return Reply(title="No active silences.", blocks=tuple(blocks))
    title = f"{len(active)} active silence(s)" + (f", {theirs} more in Alertmanager" if theirs else "")
    return Reply(title=title, blocks=tuple(blocks))


def _mistyped(line: str) -> str | None:
    """The command one word is a typo of (`stauts` → status); None for anything else."""
    words = line.split()
    if len(words) != 1 or words[0].lower() in COMMANDS:
        return None
    close = difflib.get_close_matches(words[0].lower(), list(COMMANDS), n=1, cutoff=0.75)
    return close[0] if close else None


async def _help(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    lines = [f"/{c.usage} — {c.summary}" + (" (responder)" if c.mutating else "") for c in COMMANDS.values()]
    return Reply(
        title="SigOps commands",
        blocks=("\n".join(lines), "Or just type a question. Durations: 30m, 2h, 1d."),
    )


async def _whoami(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    _no_args(args)
    key = f"{ctx.platform}:{ctx.user_id}"
    return Reply(
        title=f"You are {ctx.user_name}",
        fields=(("id", key), ("chat", ctx.chat_id), ("role", ctx.role)),
        blocks=(f'To grant a role, an admin adds "{key}": "responder" to SIGOPS_ROLES.',),
    )


# ---- commands that change alerts -------------------------------------------------------------


async def _ack(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    ref = _one_ref(args)
    return _result(await core.need_actions().ack(ctx.actor, ref))


async def _unack(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    ref = _one_ref(args)
    return _result(await core.need_actions().unack(ctx.actor, ref))


async def _resolve(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    if not args:
        raise UsageError("resolve needs an alert id.")
    return _result(await core.need_actions().resolve(ctx.actor, args[0], " ".join(args[1:])))


async def _snooze(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    if len(args) != 2:
        raise UsageError("snooze needs an alert id and a duration.")
    try:
        return _result(await core.need_actions().snooze(ctx.actor, args[0], args[1]))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


async def _silence(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    at = next((i for i, word in enumerate(args) if i > 0 and _is_duration(word)), None)
    if at is None:
        raise UsageError("silence needs matchers (or an alert id) and then a duration.")
    try:
        result = await core.need_actions().silence(ctx.actor, args[:at], args[at], " ".join(args[at + 1 :]))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return _result(result)


async def _unsilence(core: CommandCore, ctx: CommandContext, args: list[str]) -> Reply:
    return _result(await core.need_actions().unsilence(ctx.actor, _one_ref(args)))


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("status", "status", "open alerts, the most anomalous series, delivery problems", _status),
        Command(
            "ack", "ack <alert>", "acknowledge an alert (or a group): no more reminders", _ack, "responder"
        ),
        Command("unack", "unack <alert>", "take an acknowledgement back", _unack, "responder"),
        Command(
            "resolve", "resolve <alert> [note]", "mark an alert resolved, with a note", _resolve, "responder"
        ),
        Command(
            "silence",
            "silence <matchers|alert> <duration> [comment]",
            'mute alerts, e.g. silence service="payments" 2h deploy',
            _silence,
            "responder",
        ),
        Command("silences", "silences", "active silences", _silences),
        Command("unsilence", "unsilence <id>", "end a silence now", _unsilence, "responder"),
        Command("snooze", "snooze <alert> <duration>", "no reminders for a while", _snooze, "responder"),
        Command("ask", "ask <question>", "answer from the stored signals, with evidence ids", _ask),
        Command("brief", "brief", "what happened in the last 24 h", _brief),
        Command("chart", "chart <series> [range]", "a chart of a series (range e.g. 6h, 2d)", _chart),
        Command("help", "help", "this list", _help),
        Command("whoami", "whoami", "your id and role", _whoami),
    )
}


def alert_line(alert: Alert, now: float, silenced_until: float | None = None) -> str:
    """One alert as a compact line: state, id, severity, title, score, age, owner."""
    state = "firing"
    if alert.status == "resolved":
        state = "resolved"
    elif silenced_until:
        state = "silenced"
    elif alert.acked_by:
        state = "acknowledged"
    owner = f", acked by {alert.acked_by}" if alert.acked_by else ""
    muted = f", silenced for {duration(silenced_until - now)}" if silenced_until else ""
    score = f"score {alert.score:.2f}, " if alert.detected else ""
    return (
        f"{_STATE_ICON[state]} [{alert.id}] {alert.severity.upper()} {alert.name} — "
        f"{score}open {duration(now - alert.started_at)}{owner}{muted}"
    )


def _result(result: ActionResult) -> Reply:
    if not result.ok:
        return error_reply(result.message)
    return Reply(title=result.message)


def _no_args(args: list[str]) -> None:
    if args:
        raise UsageError("this command takes no arguments.")


def _one_ref(args: list[str]) -> str:
    if len(args) != 1:
        raise UsageError("give one alert id (from the alert message or `status`).")
    return args[0]


def _is_duration(word: str) -> bool:
    try:
        return parse_duration(word) > 0
    except ValueError:
        return False


def _duration(word: str) -> float:
    try:
        seconds = parse_duration(word)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if seconds <= 0:
        raise UsageError(f"{word!r} is not a positive duration.")
    return seconds


def save_image(path: Path, data: bytes) -> None:
    """Write a chart where the console (and the chat front ends) can point to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _when(ts: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M %Z")
