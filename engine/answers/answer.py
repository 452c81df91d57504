"""Retrieval answers: what the record says about a question, with the figures computed in code.

The question is read in code (`engine/question.py`: window, services, series,
intent). The record is filtered by those; figures (counts, peaks vs expected, max
score, durations, the busiest services, before/after a change) are computed here;
the hybrid retriever adds the documents whose words and meaning match best (changes,
events, logs). Every item is cited by a short id and time. This is the whole answer
when no model is configured or it is down, and the context a model narrates otherwise.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from engine.alerting.alerts import Alert, last_time_line
from engine.alerting.risk import ChangeRef
from engine.answers.question import Question, parse_question
from engine.answers.retrieval import Hit, Retriever
from engine.detection.detect import Anomaly
from engine.text import duration, fmt

BEFORE_AFTER_MAX_S = 6 * 3600


class AnswerSource(Protocol):
    """What retrieval reads (the SQLite record implements it)."""

    async def alerts_since(self, since: float, limit: int = 200) -> list[Alert]: ...

    async def recent_anomalies(self, since: float, limit: int = 50) -> list[Anomaly]: ...

    async def changes_in(self, since: float, until: float) -> list[ChangeRef]: ...


class NameSource(Protocol):
    async def names(self) -> tuple[list[str], list[str]]:
        """Services and series a question may name."""
        ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """One cited item: its id, when, and a line of what it says."""

    id: str
    kind: str  # alert | anomaly | change | event | log
    ts: float
    line: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A retrieval answer: summary lines with figures and the evidence they rest on."""

    question: str
    window_s: float
    services: tuple[str, ...]
    summary: list[str]
    evidence: list[Evidence] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    mode: str = "retrieval-only"
    window: str = ""
    intent: str = "summary"
    since: float = 0.0
    until: float = 0.0


class RetrievalAnswerer:
    """Answers from the record alone."""

    def __init__(
        self,
        source: AnswerSource,
        clock: Callable[[], float] = time.time,
        tz: tzinfo = UTC,
        retriever: Retriever | None = None,
        names: NameSource | None = None,
    ) -> None:
        self.source = source
        self.clock = clock
        self.tz = tz
        self.retriever = retriever
        self.names = names

    async def answer(self, question: str) -> Answer:
        now = self.clock()
        services, series = await self.names.names() if self.names else ([], [])
        broad_alerts = await self.source.alerts_since(now - 8 * 86400, limit=2000)
        services = sorted({*services, *(a.service for a in broad_alerts)})
        series = sorted({*series, *(a.series for a in broad_alerts)})
        q = parse_question(question, now, self.tz, services, series)
        unknown = _unknown_subject(question, q)
        known = ", ".join(services[:12]) or "none yet"
        if unknown is not None:
            line = f"No service or series named {unknown!r} is in the record (services: {known})."
            return _only(q, line)
        changes = await self.source.changes_in(
            q.since - (BEFORE_AFTER_MAX_S if q.since_change else 0), q.until
        )
        change = _last_change(changes, q) if q.since_change else None
        since = change.ts if change else q.since
        alerts = [
            a
            for a in await self.source.alerts_since(since, limit=2000)
            if _in(a.started_at, a.series, a.service, q, since)
            or (a.status != "resolved" and a.started_at <= q.until and _scoped(a.series, a.service, q))
        ]
        earliest = since - (BEFORE_AFTER_MAX_S if change else 0)
        all_anomalies = await self.source.recent_anomalies(earliest, limit=20_000)
        anomalies = [a for a in all_anomalies if _in(a.ts, a.series, a.service, q, since)]
        hits = await self.retriever.search(_narrowed(q, since)) if self.retriever else []
        if self.retriever and _open_ended(q) and not any(h.lexical > 0 for h in hits):
            # "tell me about the TLS certificate": what names it may be older than a day
            hits = await self.retriever.search(_narrowed(q, now - TEXT_LOOKBACK_S))
        if _off_topic(question, q, hits):
            return _only(q, OFF_TOPIC.format(services=known))
        if _open_ended(q) and not _DOMAIN.search(question) and not _ASKS_FIRING.search(question):
            found = [h for h in hits if h.lexical > 0 and h.doc.kind not in ("alert", "anomaly")]
            if found:  # a lookup of something named in events, logs or changes: answer with those
                return self._mentions(q, found)
        answer = self._compose(
            q,
            since,
            alerts,
            anomalies,
            [c for c in changes if _in(c.ts, "", c.service, q, since)],
            change,
            all_anomalies,
            hits,
        )
        return await self._compared(q, answer) if q.compare else answer

    async def _compared(self, q: Question, answer: Answer) -> Answer:
        """Add the other window of a comparison ("today vs yesterday") and the difference."""
        assert q.compare is not None
        since, until, label = q.compare
        other = replace(q, since=since, until=until)
        alerts = [
            a
            for a in await self.source.alerts_since(since, limit=2000)
            if _in(a.started_at, a.series, a.service, other, since)
        ]
        anomalies = [
            a
            for a in await self.source.recent_anomalies(since, limit=20_000)
            if _in(a.ts, a.series, a.service, other, since)
        ]
        now_alerts, now_anomalies = int(answer.figures["alerts"]), int(answer.figures["anomalies"])
        line = (
            f"Compared with {label}: {now_alerts} alert(s) vs {len(alerts)} "
            f"({now_alerts - len(alerts):+d}), {now_anomalies} anomalous point(s) vs {len(anomalies)} "
            f"({now_anomalies - len(anomalies):+d})."
        )
        figures = answer.figures | {
            "compared_alerts": float(len(alerts)),
            "compared_anomalies": float(len(anomalies)),
        }
        cited = {e.id for e in answer.evidence}
        evidence = answer.evidence + [_alert_evidence(a) for a in alerts[:4] if a.id not in cited]
        return replace(answer, summary=[*answer.summary, line], figures=figures, evidence=evidence)

    def _compose(
        self,
        q: Question,
        since: float,
        alerts: Sequence[Alert],
        anomalies: Sequence[Anomaly],
        changes: Sequence[ChangeRef],
        change: ChangeRef | None,
        all_anomalies: Sequence[Anomaly],
        hits: Sequence[Hit],
    ) -> Answer:
        scope = ", ".join(q.series or q.services) or "all services"
        window = f"since {change.phrase} ({self._hhmm(change.ts)})" if change else q.window
        by_series: dict[str, list[Anomaly]] = defaultdict(list)
        for anomaly in anomalies:
            by_series[anomaly.series].append(anomaly)
        figures: dict[str, float] = {
            "alerts": float(len(alerts)),
            "alerts_firing": float(sum(1 for a in alerts if a.status != "resolved")),
            "anomalies": float(len(anomalies)),
            "series": float(len(by_series)),
            "max_score": round(max((a.score for a in anomalies), default=0.0), 2),
            "changes": float(len(changes)),
        }
        evidence = [_alert_evidence(a) for a in sorted(alerts, key=lambda a: (-a.score, a.started_at))[:8]]
        summary = [
            f"{window.capitalize()} for {scope}: {len(alerts)} alert(s) "
            f"({int(figures['alerts_firing'])} still open), {len(anomalies)} anomalous point(s) on "
            f"{len(by_series)} series, {len(changes)} change(s)."
        ]
        ranked = sorted(by_series.items(), key=lambda kv: max(a.score for a in kv[1]), reverse=True)
        for series, points in ranked[:5]:
            peak = max(points, key=lambda a: abs(a.value - a.expected))
            summary.append(
                f"{series}: {len(points)} anomalous point(s), peak {fmt(peak.value)} vs expected "
                f"{fmt(peak.expected)} at {self._hhmm(peak.ts)} [{peak.signal_id[:8]}]"
            )
            figures[f"peak:{series}"] = peak.value
            evidence.append(Evidence(peak.signal_id[:8], "anomaly", peak.ts, peak.explanation))
        busiest = Counter(a.service for a in alerts) + Counter(a.service for a in anomalies)
        if len(busiest) > 1 and q.intent in ("list", "count", "compare", "summary"):
            summary.append("Busiest: " + ", ".join(f"{s} {n}" for s, n in busiest.most_common(5)))
            figures |= {f"events:{s}": float(n) for s, n in busiest.most_common(5)}
        for c in changes[-5:]:
            evidence.append(Evidence(c.id[:8], "change", c.ts, f"{c.change_type} on {c.service}: {c.text}"))
        if change is not None:
            before, after = _before_after(change, all_anomalies, q, self.clock())
            summary.append(
                f"Anomalous points on {scope}: {after} since {change.change_type} "
                f"at {self._hhmm(change.ts)}, "
                f"{before} in as long before it."
            )
            figures |= {"anomalies_before_change": float(before), "anomalies_after_change": float(after)}
        if q.intent == "why":  # what worked the last time the same thing happened
            _add_last_times(alerts, summary, evidence)
        if _ASKS_RESOLUTION.search(q.text):  # answer who and how in the summary itself
            summary += [_resolution_line(a) for a in alerts if a.status == "resolved" and a.resolved_by][:5]
        if _ASKS_FIRING.search(q.text):  # every firing one, not the top few; not the resolved
            evidence = self._list_firing(alerts, summary, evidence)
        _add_text_evidence(evidence, hits, cap=max(16, len(evidence) + 4))  # room for text still
        if not alerts and not anomalies:
            summary[0] = f"Nothing abnormal recorded for {scope} {_phrase(window)}." + (
                f" {len(changes)} change(s) in that time." if changes else ""
            )
        return _answer_of(q, since, summary, evidence, figures, window)

    def _list_firing(
        self, alerts: Sequence[Alert], summary: list[str], evidence: list[Evidence]
    ) -> list[Evidence]:
        """Name every firing alert in the summary; the evidence drops the resolved and cites the firing."""
        firing = [a for a in alerts if a.status != "resolved"]
        listed = "; ".join(f"{a.name} [{a.id}] since {self._hhmm(a.started_at)}" for a in firing[:30])
        summary.append(f"Still firing ({len(firing)}): {listed}." if firing else "Nothing is firing.")
        resolved = {a.id for a in alerts if a.status == "resolved"}
        kept = [e for e in evidence if e.id not in resolved]
        shown = {e.id for e in kept}
        return kept + [_alert_evidence(a) for a in firing[:30] if a.id not in shown]

    def _mentions(self, q: Question, found: Sequence[Hit]) -> Answer:
        """The answer to a lookup ("tell me about the TLS certificate"): the records that name it."""
        top = sorted(found, key=lambda h: (-h.lexical, -h.score))[:5]
        lines = [f"{h.doc.text} [{h.doc.short_id}] ({self._day_hhmm(h.doc.ts)})" for h in top]
        summary = [f"Found in the record ({len(found)} match(es)): " + "; ".join(lines[:3]) + "."]
        evidence = [Evidence(h.doc.short_id, h.doc.kind, h.doc.ts, h.doc.text) for h in top]
        since = min(q.since, *(h.doc.ts for h in top))
        return _answer_of(q, since, summary, evidence, {"matches": float(len(found))}, q.window)

    def _day_hhmm(self, ts: float) -> str:
        when, today = datetime.fromtimestamp(ts, self.tz), datetime.fromtimestamp(self.clock(), self.tz)
        days = (today.date() - when.date()).days
        day = "today" if days == 0 else "yesterday" if days == 1 else when.strftime("%a %d %b")
        return f"{day} {when:%H:%M}"

    def _hhmm(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%H:%M")


_SUBJECT = re.compile(r"\b(?:on|with|for)\s+([A-Za-z][\w.\-]{2,})", re.I)
_NOT_SUBJECTS = set(
    "the this that these those today yesterday now all any everything anything our my prod production "
    "staging us me it them deploy deploys deployments changes change alerts alert errors error latency "
    "spikes incidents incident services service series respect regard real sure example instance once "
    "while hours days minutes weeks things stuff monday tuesday wednesday thursday friday saturday sunday "
    "mondays tuesdays wednesdays thursdays fridays saturdays sundays things going doing".split()
)


# "status of shipping", "how is shipping doing", "is shipping ok": a subject too
_STATUS_SUBJECTS = [
    re.compile(r"\b(?:status|state|health) of\s+([A-Za-z][\w.\-]{2,})", re.I),
    re.compile(r"\bhow(?:'s|\s+is|\s+are)\s+([A-Za-z][\w.\-]{2,})", re.I),
    re.compile(
        r"\bis\s+([A-Za-z][\w.\-]{2,})\s+(?:ok|okay|up|down|healthy|fine|broken|working|alright|degraded)\b",
        re.I,
    ),
]


def _unknown_subject(text: str, q: Question) -> str | None:
    """A name the question asks about ("anything on billing?") that the record does not know."""
    if q.services or q.series:
        return None
    for pattern in (_SUBJECT, *_STATUS_SUBJECTS):
        match = pattern.search(text)
        if match is not None and match.group(1).lower().rstrip(".?!,") not in _NOT_SUBJECTS:
            return match.group(1).rstrip(".?!,")
    return None


_ASKS_RESOLUTION = re.compile(
    r"\b(who\s+(resolved|fixed|closed|handled)|resolution|fix(ed)?|what\s+(was|did)\b.*\b(do|done|fix))\b",
    re.I,
)
_ASKS_FIRING = re.compile(
    r"\b(still\s+(firing|open)|firing|open alerts?|unresolved|not resolved|open (right )?now|"
    r"what(')?s open|anything open)\b",
    re.I,
)
# A lookup of something named (no service, no time) searches events and logs this far back
# when the last day has nothing that names it.
TEXT_LOOKBACK_S = 7 * 86400

OFF_TOPIC = (
    "I answer questions about the signals SigOps records: alerts, anomalies, changes, events and "
    'logs. For example: "what spiked on payments in the last 6 hours?", "why did checkout alert at '
    '3am?", "is anything still firing?", "what changed since the deploy?". Services I know: {services}.'
)
_ARITHMETIC = re.compile(r"\d\s*[-+*/x×^]\s*\d")
# Words that make a question about operations even when it names no service or time.
_DOMAIN = re.compile(
    r"\b(alert|anomal|spik|deploy|error|latenc|incident|fir(e|ing)|status|down|slow|problem|issue|"
    r"happen|wrong|odd|weird|unusual|chang|outage|broke|fail|resolv|ack|silenc|nois|busy|peak|surg|"
    r"timeout|metric|signal|log|event|summar|anything|overnight|restart|crash|cpu|memory|disk|queue|"
    r"traffic|load|rollback|release|flag|config|page|on.?call|brief)",
    re.I,
)


def _open_ended(q: Question) -> bool:
    """The question names no service, series, time, change or comparison."""
    return not (q.services or q.series or q.explicit_window or q.since_change or q.compare)


def _off_topic(text: str, q: Question, hits: Sequence[Hit]) -> bool:
    """Not a question about the signals at all ("what is 2+2", "tell me a joke")."""
    if not _open_ended(q) or _ASKS_FIRING.search(text):
        return False
    if _ARITHMETIC.search(text):
        return True
    return not _DOMAIN.search(text) and not any(h.lexical > 0 for h in hits)


def _answer_of(
    q: Question,
    since: float,
    summary: list[str],
    evidence: list[Evidence],
    figures: dict[str, float],
    window: str,
) -> Answer:
    return Answer(
        q.text,
        q.until - since,
        q.services,
        summary,
        evidence,
        figures,
        window=window,
        intent=q.intent,
        since=since,
        until=q.until,
    )


def _only(q: Question, line: str) -> Answer:
    """An answer that is one line and no evidence (the question cannot be answered from the record)."""
    return Answer(
        q.text, q.until - q.since, (), [line], window=q.window, intent=q.intent, since=q.since, until=q.until
    )


def _scoped(series: str, service: str, q: Question) -> bool:
    if q.series:
        return series in q.series or (not series and service in q.services)
    return not q.services or service in q.services


def _in(ts: float, series: str, service: str, q: Question, since: float) -> bool:
    return since <= ts <= q.until and _scoped(series, service, q)


def _narrowed(q: Question, since: float) -> Question:
    return replace(q, since=since)


def _last_change(changes: Sequence[ChangeRef], q: Question) -> ChangeRef | None:
    scoped = [c for c in changes if not q.services or c.service in q.services]
    return scoped[-1] if scoped else None


def _before_after(
    change: ChangeRef, anomalies: Sequence[Anomaly], q: Question, now: float
) -> tuple[int, int]:
    span = min(BEFORE_AFTER_MAX_S, max(60.0, now - change.ts))
    scoped = [a for a in anomalies if _scoped(a.series, a.service, q)]
    before = sum(1 for a in scoped if change.ts - span <= a.ts < change.ts)
    after = sum(1 for a in scoped if change.ts <= a.ts <= change.ts + span)
    return before, after


def _phrase(window: str) -> str:
    return (
        window
        if window.startswith(("since", "around"))
        else f"in the {window}"
        if window.startswith("last")
        else window
    )


def _add_last_times(alerts: Sequence[Alert], summary: list[str], evidence: list[Evidence]) -> None:
    """For a "why" question: what ended the previous alert of the same kind, cited."""
    for alert in [a for a in alerts if isinstance(a.context.get("last_time"), dict)][:3]:
        last = alert.context["last_time"]
        said = last_time_line(last, alert.started_at)
        summary.append(f"{alert.name} [{alert.id}]: {said[0].lower()}{said[1:]}")
        past = str(last.get("id"))
        if past not in {e.id for e in evidence}:
            ended = float(last.get("resolved_at") or alert.started_at)
            evidence.append(Evidence(past, "alert", ended, f"the previous {alert.name}: {said}"))


def _alert_evidence(alert: Alert) -> Evidence:
    lasted = f", lasted {duration(alert.resolved_at - alert.started_at)}" if alert.resolved_at else ""
    note = f", resolved by {alert.resolved_by}: {alert.note}" if alert.resolved_by and alert.note else ""
    acked = f", acknowledged by {alert.acked_by}" if alert.acked_by else ""
    score = f"score {alert.score:.2f}" if alert.detected else f"from {alert.source}"
    line = f"{alert.status} {alert.severity}: {alert.name} ({score}{lasted}{acked}{note})"
    if alert.explanation:  # what the alert itself says (an Alertmanager summary, the anomaly's line)
        line += f": {' '.join(alert.explanation.split())[:200]}"
    return Evidence(alert.id, "alert", alert.started_at, line)


def _add_text_evidence(evidence: list[Evidence], hits: Sequence[Hit], cap: int = 16) -> None:
    """Retrieved documents (events, logs, changes) not cited yet, up to `cap` items in all."""
    cited = {e.id for e in evidence}
    for hit in hits:
        doc = hit.doc
        if doc.short_id in cited or doc.kind in ("alert", "anomaly") or len(evidence) >= cap:
            continue
        cited.add(doc.short_id)
        evidence.append(Evidence(doc.short_id, doc.kind, doc.ts, doc.text))


def _resolution_line(alert: Alert) -> str:
    lasted = duration((alert.resolved_at or alert.updated_at) - alert.started_at)
    note = f": '{alert.note}'" if alert.note else " (no note)"
    return f"{alert.name} was resolved by {alert.resolved_by} after {lasted}{note} [{alert.id}]."
