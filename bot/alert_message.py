"""What an alert group's chat message says, as a platform-neutral `Reply`.

One message per group per chat, edited as the group changes: it leads with the worst
alert (state, score, value vs expected, explanation, related changes), lists the rest
compactly, and names every affected series even in a burst (a front end splits a long
message into parts rather than cut it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo

from bot.reply import Button, Reply
from engine.alerting.alerts import Alert, alert_links, alert_values, last_time_line, own_labels
from engine.alerting.notify import NEW_ALERTS, REPEAT, Notification
from engine.text import clock as _clock
from engine.text import duration, fmt, usual_range

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


@dataclass(frozen=True, slots=True)
class LabelView:
    """Which of an alert's labels a message shows, and in what order.

    Shown: the labels that tell the group's alerts apart (those all of them share, and the
    group's own, say nothing), minus `hidden`; `first` come first, the rest by name."""

    hidden: frozenset[str] = frozenset()
    first: tuple[str, ...] = ()

    def telling(self, alert: Alert, common: Mapping[str, str]) -> list[tuple[str, str]]:
        shown = {
            k: v
            for k, v in own_labels(alert.labels).items()
            if k not in _SAID_ELSEWHERE and k not in self.hidden and common.get(k) != v
        }
        order = {name: i for i, name in enumerate(self.first)}
        return sorted(shown.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))


DEFAULT_LABELS = LabelView()
_SAID_ELSEWHERE = frozenset({"alertname", "severity"})  # the title and the severity field


def group_reply(note: Notification, tz: tzinfo = UTC, labels: LabelView = DEFAULT_LABELS) -> Reply:
    """The message of one alert group."""
    top = note.top
    state = group_state(note)
    count = len(note.alerts)
    scope = f" · {count} alerts" if count > 1 else ""
    title = f"{_ICON[state]} {state.upper()}{scope} · {top.title}"
    common = _common_labels(note)
    fields = [("state", alert_state(top, note, tz)[1]), ("severity", top.severity)]
    telling = labels.telling(top, common)
    if telling:
        fields.append(("labels", _pairs(telling)))
    fields += _measure_fields(top)
    blocks = [b for b in (top.explanation, _related(top)) if b]
    others = [a for a in note.alerts if a.id != top.id]
    if others:
        blocks.append(_others(others, note, common, labels))
    # Once every firing alert is acknowledged, the first button takes the ack back.
    acked = all(a.acked_by for a in note.firing)
    # One id to type, the one the buttons use: the alert's own when it is alone in its message
    # (as /status lists it), the group's when the buttons act on several alerts at once.
    target = top.id if count == 1 else note.group_id
    buttons = () if state == "resolved" else _buttons(target, acked)
    scope_id = (
        f"id {top.id}"
        if count == 1
        else f"id {note.group_id} (all {count}; each alert's own id is in status)"
    )
    footer = f"{scope_id} · from {top.source} · {note.reason}"
    return Reply(
        title=title,
        blocks=tuple(blocks),
        fields=tuple(fields),
        links=tuple((name.capitalize(), url) for name, url in alert_links(top.labels)),
        buttons=buttons,
        footer=footer,
    )


def nudge(note: Notification, labels: LabelView = DEFAULT_LABELS) -> str:
    """The thread reply that makes an edit heard: what is new (the new alerts, not the old top)."""
    news = [a for a in note.alerts if a.id in note.news] or [note.top]
    common = _common_labels(note)
    names = [_named(a, common, labels) for a in news[:3]]
    more = f" and {len(news) - 3} more" if len(news) > 3 else ""
    lead = {NEW_ALERTS: "➕ New in this group", REPEAT: "⏰ Still firing"}.get(
        note.reason, note.reason.capitalize()
    )
    return f"{lead}: {'; '.join(names)}{more}"


def digest_reply(notes: Sequence[Notification], tz: tzinfo = UTC) -> Reply:
    """Several groups in one message, when a burst would otherwise flood the chat."""
    firing = sum(len(n.firing) for n in notes)
    lines = []
    for note in sorted(notes, key=lambda n: -len(n.firing)):
        state = group_state(note)
        names = _names([a.series if a.detected else _named(a, _common_labels(note)) for a in note.alerts])
        lines.append(f"{_ICON[state]} {note.top.title} ({len(note.alerts)}): {names}")
    return Reply(
        title=f"🔥 {firing} alerts firing in {len(notes)} groups",
        blocks=("\n".join(lines), "Summarised to stay within the chat's rate limits; /status lists them."),
        footer="digest · edited as these groups change",
    )


def _common_labels(note: Notification) -> dict[str, str]:
    """Labels that say nothing about one alert: the group's own, and those all its alerts share."""
    common = dict(note.group_labels)
    if len(note.alerts) > 1:
        shared = set(own_labels(note.alerts[0].labels).items())
        for alert in note.alerts[1:]:
            shared &= set(own_labels(alert.labels).items())
        common.update(shared)
    return common


def _named(alert: Alert, common: Mapping[str, str], labels: LabelView = DEFAULT_LABELS) -> str:
    """An alert by its title and the labels that set it apart: "NodeDown instance=db2:9100"."""
    telling = labels.telling(alert, common)
    return f"{alert.title} {_pairs(telling)}" if telling else alert.title


def _pairs(labels: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels)


def _measure_fields(alert: Alert) -> list[tuple[str, str]]:
    """Figures that mean something: SigOps' own for a detected anomaly; for an alert raised
    elsewhere only what that system measured (Grafana's values), never a made-up score."""
    if not alert.detected:
        values = alert_values(alert.labels)
        return [("values", _pairs(values))] if values else []
    fields = [("series", alert.series)]
    if alert.explanation:
        pass  # it names the strongest point's value, expected value and usual range: one set of figures
    elif alert.value is not None and alert.expected is not None:
        figure = f"{fmt(alert.value)}, expected {fmt(alert.expected)}"
        if alert.lower is not None and alert.upper is not None:
            figure += f" ({usual_range(alert.lower, alert.upper, alert.value, alert.expected)})"
        fields.append(("value", figure))
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
    last = alert.context.get("last_time")
    if isinstance(last, dict):
        related.append("🕘 " + last_time_line(last, alert.started_at))
    return "\n".join(related)


def _others(others: Sequence[Alert], note: Notification, common: Mapping[str, str], labels: LabelView) -> str:
    lines = []
    for alert in others[:DETAILED]:
        value = ""
        if alert.detected and alert.value is not None and alert.expected is not None:
            value = f" {fmt(alert.value)} vs {fmt(alert.expected)}"
        lines.append(f"• {_named(alert, common, labels)}{value} — {alert_state(alert, note)[1]}")
    rest = others[DETAILED:]
    if rest:
        where = f" in {note.top.service}" if note.top.service else ""
        names = [a.series if a.detected else _named(a, common, labels) for a in rest]
        lines.append(f"{len(rest)} more alerts{where}: {_names(names)}")
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
