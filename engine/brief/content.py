"""The morning brief's content: what happened in a window, so the first person on shift knows where to look.

Facts are computed here from the record: a headline, the alerts (fired, resolved, still
open, acknowledged by whom, flapping), silences (and those ending today), the top
anomalies with peak vs expected and the change just before them, the changes of the
window with what followed, and trends that reach their limit within a day.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from engine.alerting.alerts import Alert
from engine.alerting.risk import ChangeRef
from engine.alerting.silences import Silence
from engine.answers.narrate import CITATION, LanguageModel, check
from engine.detection.detect import Anomaly
from engine.detection.forecast import Forecast, forecast, limit_for
from engine.errors import ModelUnavailable
from engine.text import duration, fmt
from prompts import render

TREND_HORIZON_S = 86400
RELATED_CHANGE_S = 30 * 60


class BriefSource(Protocol):
    async def alerts_since(self, since: float, limit: int = 200) -> list[Alert]: ...

    async def recent_anomalies(self, since: float, limit: int = 50) -> list[Anomaly]: ...

    async def changes_in(self, since: float, until: float) -> list[ChangeRef]: ...

    async def series_named(self, text: str, limit: int = 10) -> list[str]: ...

    async def series_points(
        self, series: str, since: float, limit: int = 20_000
    ) -> list[tuple[float, float]]: ...

    async def latest_labels(self, series: str) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class TopAnomaly:
    series: str
    peak: Anomaly
    points: int
    lasted_s: float
    change: ChangeRef | None


@dataclass(slots=True)
class Brief:
    since: float
    until: float
    headline: str
    fired: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    still_open: list[Alert] = field(default_factory=list)
    flapping: list[Alert] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    top: list[TopAnomaly] = field(default_factory=list)
    changes: list[tuple[ChangeRef, int]] = field(default_factory=list)  # (change, anomalous points after it)
    trends: list[Forecast] = field(default_factory=list)


async def build_brief(
    source: BriefSource, since: float, until: float, tz: tzinfo, silences: Sequence[Silence] = ()
) -> Brief:
    """The brief of the window [since, until]."""
    alerts = [a for a in await source.alerts_since(since, limit=2000) if a.started_at <= until]
    fired = sorted((a for a in alerts if a.started_at >= since), key=lambda a: a.started_at)
    resolved = [a for a in alerts if a.status == "resolved" and since <= (a.resolved_at or 0) <= until]
    still_open = [a for a in alerts if a.status != "resolved"]
    anomalies = [a for a in await source.recent_anomalies(since, limit=20_000) if a.ts <= until]
    changes = await source.changes_in(since - RELATED_CHANGE_S, until)
    brief = Brief(since, until, "", fired, resolved, still_open, [a for a in alerts if a.flapping])
    brief.silences = sorted(silences, key=lambda s: s.ends_at)
    by_series: dict[str, list[Anomaly]] = defaultdict(list)
    for anomaly in anomalies:
        by_series[anomaly.series].append(anomaly)
    ranked = sorted(by_series.items(), key=lambda kv: max(a.score for a in kv[1]), reverse=True)[:5]
    for series, points in ranked:
        peak = max(points, key=lambda a: abs(a.value - a.expected))
        first = min(p.ts for p in points)
        before = [
            c for c in changes if c.service == peak.service and first - RELATED_CHANGE_S <= c.ts <= first
        ]
        brief.top.append(
            TopAnomaly(
                series, peak, len(points), max(p.ts for p in points) - first, before[-1] if before else None
            )
        )
    for change in (c for c in changes if c.ts >= since):
        after = sum(
            1 for a in anomalies if a.service == change.service and change.ts <= a.ts <= change.ts + 3600
        )
        brief.changes.append((change, after))
    for series in await source.series_named("_pct", limit=50):
        limit = limit_for(series, await source.latest_labels(series))
        if limit is None:
            continue
        result = forecast(
            series, await source.series_points(series, until - 6 * 3600), limit, TREND_HORIZON_S
        )
        if result is not None:
            brief.trends.append(result)
    quiet = not fired and not still_open
    if quiet:
        brief.headline = "Quiet night: no alerts" + (
            f", {len(anomalies)} anomalous point(s)." if anomalies else "."
        )
    else:
        counts = f"{len(fired)} alert(s) fired, {len(resolved)} resolved, {len(still_open)} still open"
        brief.headline = counts + (" — start there." if still_open else ".")
    brief.silences = [s for s in brief.silences if s.ends_at > until]
    return brief


def ends_today(silence: Silence, until: float, tz: tzinfo) -> bool:
    end_of_day = datetime.fromtimestamp(until, tz).replace(hour=0, minute=0, second=0) + timedelta(days=1)
    return silence.ends_at < end_of_day.timestamp()


def brief_lines(brief: Brief, tz: tzinfo) -> list[tuple[str, list[str]]]:
    """The brief as titled sections of lines (platform-neutral; renderers escape and split)."""

    def at(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).strftime("%a %H:%M")

    sections = [
        ("Still open", [_open_line(a, at) for a in brief.still_open]),
        ("Fired", [f"[{a.id}] {a.name} at {at(a.started_at)}" for a in brief.fired[:15]]),
        ("Resolved", [_resolved_line(a) for a in brief.resolved[:15]]),
        ("Flapping", [f"[{a.id}] {a.name}" for a in brief.flapping]),
        ("Silences", [_silence_line(s, at, ends_today(s, brief.until, tz)) for s in brief.silences]),
        ("Top anomalies", [_top_line(t, at) for t in brief.top]),
        ("Changes", [_change_line(c, n, at) for c, n in brief.changes]),
        ("Trends to watch", [t.text for t in brief.trends]),
    ]
    return [(title, lines) for title, lines in sections if lines]


def _open_line(a: Alert, at: Callable[[float], str]) -> str:
    acked = f", acknowledged by {a.acked_by}" if a.acked_by else ""
    return f"[{a.id}] {a.severity} {a.name} since {at(a.started_at)}{acked}"


def _resolved_line(a: Alert) -> str:
    how = f" by {a.resolved_by}" + (f": {a.note}" if a.note else "") if a.resolved_by else ""
    return f"[{a.id}] {a.name} after {duration((a.resolved_at or a.updated_at) - a.started_at)}{how}"


def _silence_line(s: Silence, at: Callable[[float], str], today: bool) -> str:
    return (
        f"[{s.id}] {s.matcher_text} until {at(s.ends_at)}"
        + (" (ends today)" if today else "")
        + f", by {s.author}"
    )


def _top_line(t: TopAnomaly, at: Callable[[float], str]) -> str:
    after = f"; after {t.change.phrase}" if t.change else ""
    return (
        f"{t.series}: peak {fmt(t.peak.value)} vs expected {fmt(t.peak.expected)} at {at(t.peak.ts)}, "
        f"{t.points} point(s) over {duration(t.lasted_s)}{after} [{t.peak.signal_id[:8]}]"
    )


def _change_line(c: ChangeRef, followed: int, at: Callable[[float], str]) -> str:
    after = f" — followed by {followed} anomalous point(s) within the hour" if followed else ""
    where = "" if c.service in c.phrase else f" on {c.service}"
    return f"[{c.id[:8]}] {at(c.ts)} {c.phrase}{where}{after}"


async def narrate(model: LanguageModel | None, brief: Brief, tz: tzinfo, timeout_s: float) -> tuple[str, str]:
    """A short narrative of the brief by the model, checked; ("", why) when there is none."""
    if model is None:
        return "", "no language model is configured"
    sections = brief_lines(brief, tz)
    if not sections:
        return "", "nothing to narrate"
    facts = "\n".join(f"{title}:\n" + "\n".join(f"- {line}" for line in lines) for title, lines in sections)
    window = (
        f"{datetime.fromtimestamp(brief.since, tz):%a %H:%M} to "
        f"{datetime.fromtimestamp(brief.until, tz):%a %H:%M %Z}"
    )
    prompt = render("brief", window=window, headline=brief.headline, facts=facts)
    pieces: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for piece in model.stream(system="", user=prompt):
                pieces.append(piece)
    except TimeoutError:
        return "", f"the model did not finish within {timeout_s:.0f}s"
    except ModelUnavailable as exc:
        return "", exc.reason + (f" ({exc.hint})" if exc.hint else "")
    text = "".join(pieces).strip()
    ids = set(CITATION.findall(facts))
    checked, unverified, unknown = check(text, f"{brief.headline}\n{facts}", ids)
    note = "; ".join(
        ([f"figures not found in the record: {', '.join(unverified)}"] if unverified else [])
        + ([f"unknown ids: {', '.join(unknown)}"] if unknown else [])
    )
    return checked, note
