"""Pull sources: Prometheus range queries and HTTP probes, turned into signals.

Both run on the scheduler's interval and publish through `Ingest`, like pushed signals.
Where Prometheus left off is kept per query (a `CursorStore`, Redis in production) so a
restart neither re-reads nor skips; a Prometheus that is down is logged and tried again
next interval from the same place.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp

from engine.errors import InvalidSignal
from engine.signal import Signal, validate_signal

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[Signal]], Awaitable[object]]
MAX_POINTS_PER_QUERY = 10_000  # Prometheus refuses more than 11,000 points per series


@dataclass(frozen=True, slots=True)
class PromQuery:
    """One configured PromQL query; each returned series becomes a signal series."""

    name: str  # series name (or prefix, when the query returns several series)
    query: str
    step_s: float = 60.0
    service: str | None = None


class CursorStore(Protocol):
    """Where a pull source remembers how far it got."""

    async def get(self, name: str) -> float | None: ...

    async def set(self, name: str, ts: float) -> None: ...


@dataclass
class PrometheusSource:
    """Polls `query_range` for each query from where the last poll ended."""

    base_url: str
    queries: Sequence[PromQuery]
    cursors: CursorStore
    publish: Publish
    session: aiohttp.ClientSession
    timeout_s: float = 10.0
    lookback_s: float = 3600.0  # how far back the first poll reads
    clock: Callable[[], float] = time.time
    _failing: bool = field(default=False, repr=False)

    async def poll(self) -> int:
        """Read every query's new points and publish them; return how many signals."""
        total = 0
        for query in self.queries:
            try:
                total += await self._poll_query(query)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not self._failing:
                    log.warning(
                        "Prometheus at %s unavailable (%r); will retry next interval", self.base_url, exc
                    )
                self._failing = True
                return total
        if self._failing:
            log.warning("Prometheus at %s reachable again", self.base_url)
            self._failing = False
        return total

    async def _poll_query(self, query: PromQuery) -> int:
        # Evaluations sit on a grid (start, start+step, ...); the newest step may still change.
        settled = self.clock() - query.step_s
        cursor = await self.cursors.get(query.name)
        # Milliseconds, as Prometheus evaluates them, so the cursor matches the points exactly.
        start = round(cursor + query.step_s if cursor is not None else settled - self.lookback_s, 3)
        published = 0
        while start <= settled:
            steps = min(MAX_POINTS_PER_QUERY - 1, math.floor((settled - start) / query.step_s))
            end = round(start + steps * query.step_s, 3)  # the last grid point: the next poll continues it
            result = await self._query_range(query, start, end)
            if result is None:
                return published  # refused (a bad query): logged; tried again next interval
            signals = self._signals(query, result)
            if signals:
                await self.publish(signals)
                published += len(signals)
            await self.cursors.set(query.name, end)
            start = round(end + query.step_s, 3)
        return published

    async def _query_range(self, query: PromQuery, start: float, end: float) -> list[Any] | None:
        params = {
            "query": query.query,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{query.step_s:g}",
        }
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        url = self.base_url.rstrip("/") + "/api/v1/query_range"
        async with self.session.get(url, params=params, timeout=timeout) as response:
            body = await response.json(content_type=None)
        if body.get("status") != "success":
            log.error("Prometheus refused query %r: %s", query.name, body.get("error", body))
            return None
        data = body.get("data", {})
        return list(data.get("result", [])) if data.get("resultType") == "matrix" else []

    def _signals(self, query: PromQuery, result: list[Any]) -> list[Signal]:
        signals: list[Signal] = []
        several = len(result) > 1
        for item in result:
            metric: Mapping[str, str] = item.get("metric", {})
            labels = {k: v for k, v in metric.items() if k != "__name__"}
            series = query.name
            if several and labels:
                series += ":" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            if query.service:
                labels.setdefault("service", query.service)
            for ts, raw in item.get("values", []):
                value = float(raw)
                if not math.isfinite(value):
                    continue  # Prometheus' NaN/Inf: no observation
                try:
                    signals.append(
                        validate_signal(
                            {
                                "ts": float(ts),
                                "source": "prometheus",
                                "series": series,
                                "value": value,
                                "labels": labels,
                            }
                        )
                    )
                except InvalidSignal as exc:
                    log.warning("skipping a Prometheus point of %s: %s", series, exc)
        return signals


@dataclass(frozen=True, slots=True)
class Probe:
    """One URL to check: up (1/0) and latency become signals `<name>.up`, `<name>.latency_ms`."""

    name: str
    url: str
    timeout_s: float = 5.0
    expect_status: int = 200
    service: str | None = None


@dataclass
class ProbeSource:
    probes: Sequence[Probe]
    publish: Publish
    session: aiohttp.ClientSession
    clock: Callable[[], float] = time.time

    async def poll(self) -> int:
        """Check every URL once; publish what was seen; return how many signals."""
        signals: list[Signal] = []
        for probe in self.probes:
            signals += await self._check(probe)
        if signals:
            await self.publish(signals)
        return len(signals)

    async def _check(self, probe: Probe) -> list[Signal]:
        ts = self.clock()
        labels = {"url": probe.url[:500], **({"service": probe.service} if probe.service else {})}
        started = time.perf_counter()
        try:
            timeout = aiohttp.ClientTimeout(total=probe.timeout_s)
            async with self.session.get(probe.url, timeout=timeout, allow_redirects=False) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            down = {**labels, "error": reason}
            return [_point(ts, f"{probe.name}.up", 0.0, down, f"{probe.url} unreachable: {reason}", "error")]
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        up = status == probe.expect_status
        labels["status"] = str(status)
        return [
            _point(ts, f"{probe.name}.up", 1.0 if up else 0.0, labels, None, "info" if up else "error"),
            _point(ts, f"{probe.name}.latency_ms", latency_ms, labels, None, "info"),
        ]


def _point(
    ts: float, series: str, value: float, labels: dict[str, str], text: str | None, severity: str
) -> Signal:
    record = {"ts": ts, "source": "probe", "series": series, "value": value, "labels": labels}
    return validate_signal({**record, "text": text, "severity": severity})


# ---- the graph behind an Alertmanager alert ---------------------------------------------

_COMPARISON = re.compile(
    r"^(?P<left>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?:bool\s+)?(?P<value>[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$",
    re.S,
)


@dataclass(frozen=True, slots=True)
class AlertGraph:
    """What Prometheus' graph of an alert's rule shows: the expression's value and its threshold."""

    expr: str  # what is drawn: the rule's expression without its comparison
    threshold: float | None  # `> 0.05` in the rule: the line the value crossed
    points: list[tuple[float, float]]
    series_labels: dict[str, str]


def rule_expression(generator_url: str) -> tuple[str, float | None] | None:
    """The PromQL of an alert's rule from its `generatorURL` (`…/graph?g0.expr=…`), split into the
    value to draw and the threshold it is compared with (None: none at the top level)."""
    query = parse_qs(urlsplit(generator_url).query)
    exprs = query.get("g0.expr")
    if not exprs or not exprs[0].strip():
        return None
    expr = exprs[0].strip()
    match = _COMPARISON.match(expr)
    if match is None or _depth_at_end(match.group("left")) != 0:
        return expr, None
    return match.group("left").strip(), float(match.group("value"))


def _depth_at_end(text: str) -> int:
    """Open brackets left at the end of `text` (the comparison must be outside every one)."""
    depth = 0
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
    return depth


async def alert_graph(
    session: aiohttp.ClientSession,
    base_url: str,
    generator_url: str,
    labels: Mapping[str, str],
    since: float,
    until: float,
    timeout_s: float = 10.0,
) -> AlertGraph | None:
    """The rule's value over [since, until] from Prometheus, the series whose labels match the
    alert's best (None: no expression, no data, or Prometheus did not answer)."""
    parsed = rule_expression(generator_url)
    if parsed is None:
        return None
    expr, threshold = parsed
    step = max(1.0, math.ceil((until - since) / 300))  # about 300 points across the window
    params = {"query": expr, "start": f"{since:.3f}", "end": f"{until:.3f}", "step": f"{step:g}"}
    url = base_url.rstrip("/") + "/api/v1/query_range"
    try:
        async with session.get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("no Prometheus graph for %s: %s", expr[:80], exc)
        return None
    result = (body.get("data") or {}).get("result") or [] if isinstance(body, dict) else []
    if not result:
        return None

    def overlap(item: Any) -> int:
        metric = item.get("metric") or {}
        return sum(1 for k, v in metric.items() if labels.get(k) == v)

    best = max(result, key=overlap)
    points = [(float(t), float(v)) for t, v in best.get("values") or [] if math.isfinite(float(v))]
    if len(points) < 2:
        return None
    return AlertGraph(expr, threshold, points, dict(best.get("metric") or {}))
