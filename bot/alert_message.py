"""What an alert group's chat message says, as a platform-neutral `Reply`.

One message per group per chat, edited as the group changes: it leads with the worst
alert (state, score, value vs expected, explanation, related changes), lists the rest
compactly, and names every affected series even in a burst (a front end splits a long
message into parts rather than cut it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, tzinfo

from bot.reply import Button, Reply
from engine.alerting.alerts import Alert
from engine.alerting.notify import Notification
from engine.text import clock as _clock
from engine.text import duration, fmt

DETAILED = 8  # alerts listed one per line; the rest are named in one "N more" line

_ICON = {"firing": "🔥", "acknowledged": "👀", "silenced": "🔕", "resolved": "✅", "flapping": "〰️"}


def alert_state(alert: Alert, note: Notification | None = None, tz: tzinfo = UTC) -> tuple[str, str]:
    """(state, how people read it): firing, acknowledged by whom, silenced until, resolved."""
    if alert.status == "resolved":
        who = f" by {alert.resolved_by}" if alert.resolved_by else ""
        lasted = duration((alert.resolved_at or alert.updated_at) - alert.started_at)
        return "resolved", f"fired {_clock(alert.started_at, tz)}, resolved{who} after {lasted}"
    if note is not None and alert.id in note.silenced_until:
        return "silenced", f"silenced until {_clock(note.silenced_until[alert.id], tz)}"
    if note is not None and alert.id in note.flapping:
        return "flapping", "flapping (comes and goes; shown once, not re-announced)"
    if alert.acked_by:
        return "acknowledged", f"acknowledged by {alert.acked_by}"
    return "firing", f"firing since {_clock(alert.started_at, tz)}"


def group_state(note: Notification) -> str:
    states = [alert_state(a, note)[0] for a in note.alerts]
    for state in ("firing", "flapping", "acknowledged", "silenced"):
        if state in states:
            return state
    return "resolved"


def group_reply(note: Notification, tz: tzinfo = UTC) -> Reply:
    """The message of one alert group."""
    top = note.top
    state = group_state(note)
    count = len(note.alerts)
    scope = f" · {count} alerts" if count > 1 else ""
    title = f"{_ICON[state]} {state.upper()}{scope} · {top.title}"
    fields = [("state", alert_state(top, note, tz)[1]), *_measure_fields(top)]
    blocks = [b for b in (top.explanation, _related(top)) if b]
    others = [a for a in note.alerts if a.id != top.id]
    if others:
        blocks.append(_others(others, note, top.service))
    # Once every firing alert is acknowledged, the first button takes the ack back.
    acked = all(a.acked_by for a in note.firing)
    buttons = () if state == "resolved" else _buttons(note.group_id, acked)
    footer = f"[{top.id}] {top.source} · {note.reason} · group {note.group_id} v{note.version}"
    return Reply(title=title, blocks=tuple(blocks), fields=tuple(fields), buttons=buttons, footer=footer)


def digest_reply(notes: Sequence[Notification], tz: tzinfo = UTC) -> Reply:
    """Several groups in one message, when a burst would otherwise flood the chat."""
    firing = sum(len(n.firing) for n in notes)
    lines = []
    for note in sorted(notes, key=lambda n: -len(n.firing)):
        state = group_state(note)
        names = _names([a.series for a in note.alerts])
        lines.append(f"{_ICON[state]} {note.top.title} ({len(note.alerts)}): {names}")
    return Reply(
        title=f"🔥 {firing} alerts firing in {len(notes)} groups",
        blocks=("\n".join(lines), "Summarised to stay within the chat's rate limits; /status lists them."),
        footer="digest · edited as these groups change",
    )


def _measure_fields(alert: Alert) -> list[tuple[str, str]]:
    fields = [("severity", alert.severity), ("series", alert.series)]
    if alert.value is not None and alert.expected is not None:
        band = ""
        if alert.lower is not None and alert.upper is not None:
            band = f" ({fmt(alert.lower)}–{fmt(alert.upper)})"
        fields.append(("value", f"{fmt(alert.value)} vs expected {fmt(alert.expected)}{band}"))
    elif alert.value is not None:
        fields.append(("value", fmt(alert.value)))
    score = f"{alert.score:.2f}"
    if alert.risk:
        score += f", risk {alert.risk:.2f}"
    fields.append(("score", score))
    return fields


def _related(alert: Alert) -> str:
    related = [str(c) for c in alert.context.get("changes", ())]
    others = alert.context.get("other_series", ())
    if others:
        related.append(f"also anomalous on {alert.service}: {', '.join(map(str, others))}")
    return "\n".join(related)


def _others(others: Sequence[Alert], note: Notification, service: str) -> str:
    lines = []
    for alert in others[:DETAILED]:
        value = ""
        if alert.value is not None and alert.expected is not None:
            value = f" {fmt(alert.value)} vs {fmt(alert.expected)}"
        lines.append(f"• {alert.title}{value} — {alert_state(alert, note)[1]}")
    rest = others[DETAILED:]
    if rest:
        lines.append(f"{len(rest)} more alerts in {service}: {_names([a.series for a in rest])}")
    return "\n".join(lines)


def _names(names: Sequence[str]) -> str:
    """Every affected series, once each (a long list is split across messages, never cut)."""
    return ", ".join(dict.fromkeys(names))


def _buttons(group_id: str, acked: bool = False) -> tuple[Button, ...]:
    return (
        Button("Unack", f"unack {group_id}") if acked else Button("Ack", f"ack {group_id}"),
        Button("Silence 1h", f"silence {group_id} 1h"),
        Button("Resolve", f"resolve {group_id}"),
    )
