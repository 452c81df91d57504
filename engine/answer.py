"""Retrieval-only answers: what the record says about a question, with figures and ids.

This is the answer people get when no model is configured (and, later, when Ollama is
down): code picks the time window and services from the question, filters stored
alerts and anomalies, computes the figures and cites each item by id and time.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from engine.alerts import Alert
from engine.detect import Anomaly
from engine.text import fmt

_UNITS = {"m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400, "week": 604800}
_WINDOW = re.compile(r"\b(?:last|past)\s+(\d+)?\s*(m|min|minutes?|h|hours?|d|days?|weeks?)\b", re.I)
_WORDS = re.compile(r"[a-z0-9_\-]+")
DEFAULT_WINDOW_S = 24 * 3600


class AnswerSource(Protocol):
    """What retrieval reads (the SQLite record implements it)."""

    async def alerts_since(self, since: float, limit: int = 200) -> list[Alert]: ...

    async def recent_anomalies(self, since: float, limit: int = 50) -> list[Anomaly]: ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """One cited item: its id, when, and a line of what it says."""

    id: str
    kind: str  # alert | anomaly
    ts: float
    line: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A retrieval-only answer: summary lines with figures and the evidence they rest on."""

    question: str
    window_s: float
    services: tuple[str, ...]
    summary: list[str]
    evidence: list[Evidence] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    mode: str = "retrieval-only"


def parse_window(question: str) -> float:
    """Seconds of history the question asks about ("last 6 hours"; default a day)."""
    match = _WINDOW.search(question)
    if not match:
        if re.search(r"\btoday\b", question, re.I):
            return 24 * 3600
        if re.search(r"\bthis week\b", question, re.I):
            return 7 * 86400
        return DEFAULT_WINDOW_S
    count = int(match.group(1) or 1)
    unit = match.group(2).lower().rstrip("s") if len(match.group(2)) > 1 else match.group(2).lower()
    return count * _UNITS.get(unit, 3600)


class RetrievalAnswerer:
    """Answers from the record alone."""

    def __init__(self, source: AnswerSource, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock

    async def answer(self, question: str) -> Answer:
        now = self.clock()
        window = parse_window(question)
        since = now - window
        alerts = await self.source.alerts_since(since)
        anomalies = await self.source.recent_anomalies(since, limit=500)
        known = {a.service for a in alerts} | {a.service for a in anomalies}
        words = set(_WORDS.findall(question.lower()))
        services = tuple(sorted(s for s in known if s.lower() in words))
        if services:
            alerts = [a for a in alerts if a.service in services]
            anomalies = [a for a in anomalies if a.service in services]
        return _compose(question, window, services, alerts, anomalies)


def _compose(
    question: str,
    window: float,
    services: tuple[str, ...],
    alerts: Sequence[Alert],
    anomalies: Sequence[Anomaly],
) -> Answer:
    scope = ", ".join(services) if services else "all services"
    span = _span(window)
    if not alerts and not anomalies:
        return Answer(
            question, window, services, [f"Nothing abnormal recorded for {scope} in the last {span}."]
        )
    by_series: dict[str, list[Anomaly]] = defaultdict(list)
    for anomaly in anomalies:
        by_series[anomaly.series].append(anomaly)
    summary = [
        f"In the last {span} for {scope}: {len(alerts)} alert(s), "
        f"{len(anomalies)} anomalous point(s) on {len(by_series)} series."
    ]
    evidence: list[Evidence] = []
    for alert in alerts[:10]:
        evidence.append(
            Evidence(alert.id, "alert", alert.started_at, f"{alert.status} {alert.severity}: {alert.title}")
        )
    ranked = sorted(by_series.items(), key=lambda kv: max(a.score for a in kv[1]), reverse=True)
    for series, points in ranked[:5]:
        peak = max(points, key=lambda a: abs(a.value - a.expected))
        summary.append(
            f"{series}: {len(points)} anomalous point(s), peak {fmt(peak.value)} vs expected "
            f"{fmt(peak.expected)} at {_hhmm(peak.ts)} UTC [{peak.signal_id[:8]}]"
        )
        evidence.append(Evidence(peak.signal_id[:8], "anomaly", peak.ts, peak.explanation))
    figures = {
        "alerts": float(len(alerts)),
        "anomalies": float(len(anomalies)),
        "series": float(len(by_series)),
        "max_score": max((a.score for a in anomalies), default=0.0),
    }
    return Answer(question, window, services, summary, evidence, figures)


def _span(seconds: float) -> str:
    if seconds % 86400 == 0:
        days = int(seconds // 86400)
        return "day" if days == 1 else f"{days} days"
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{int(seconds // 60)} minutes"


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")
