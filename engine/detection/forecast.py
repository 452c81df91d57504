"""Trend forecasts: "at this rate search.queue_depth crosses 1000 in about 5 h".

A Theil–Sen slope (the median of pairwise slopes, robust to spikes) over the recent
points, reported only when the trend stands out of the noise and heads for a limit.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.text import duration, fmt

MAX_POINTS = 240  # pairwise slopes are O(n²): subsample longer histories
PERCENT_SUFFIXES = ("_pct", "_percent", ".percent", "_utilization", "_usage_pct")


@dataclass(frozen=True, slots=True)
class Forecast:
    series: str
    now_value: float  # the trend line's value at the last point
    slope_per_hour: float
    limit: float
    eta_s: float  # seconds until the trend line reaches the limit

    @property
    def text(self) -> str:
        return (
            f"at this rate {self.series} crosses {fmt(self.limit)} in about {duration(self.eta_s)} "
            f"(now {fmt(self.now_value)}, {'+' if self.slope_per_hour >= 0 else ''}"
            f"{fmt(self.slope_per_hour)}/h)"
        )


def limit_for(series: str, labels: Mapping[str, str]) -> float | None:
    """The limit a series heads for: its `limit` label, or 100 for a percentage."""
    raw = labels.get("limit")
    if raw is not None:
        try:
            return float(raw)
        except ValueError:
            return None
    if series.endswith(PERCENT_SUFFIXES):
        return 100.0
    return None


def forecast(
    series: str, points: Sequence[tuple[float, float]], limit: float, horizon_s: float = 7 * 86400
) -> Forecast | None:
    """When the steady trend of `points` (ts, value) reaches `limit`, if within the horizon."""
    if len(points) < 10:
        return None
    step = max(1, len(points) // MAX_POINTS)
    sample = list(points[::step])
    slopes = [
        (v2 - v1) / (t2 - t1) for i, (t1, v1) in enumerate(sample) for t2, v2 in sample[i + 1 :] if t2 > t1
    ]
    if not slopes:
        return None
    slope = statistics.median(slopes)
    t_last = sample[-1][0]
    intercept = statistics.median(v - slope * (t - t_last) for t, v in sample)  # value of the line at t_last
    residuals = [abs(v - (intercept + slope * (t - t_last))) for t, v in sample]
    noise = statistics.median(residuals) * 1.4826
    rise = abs(slope) * (t_last - sample[0][0])
    if rise < 3 * noise or slope == 0:
        return None  # no steady trend: noise, or flat
    remaining = limit - intercept
    if remaining == 0 or (remaining > 0) != (slope > 0):
        return None  # moving away from the limit (or already there)
    eta = remaining / slope
    if eta > horizon_s:
        return None
    return Forecast(series, intercept, slope * 3600, limit, eta)
