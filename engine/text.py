"""How numbers and durations read in explanations, alerts and answers."""

from __future__ import annotations

import math
import re
from datetime import datetime, tzinfo


def fmt(number: float) -> str:
    """A number in at most 3-4 significant digits, without noise."""
    if number == 0:
        return "0"
    if not math.isfinite(number):
        return str(number)
    magnitude = abs(number)
    if magnitude >= 1e6:
        return f"{number / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{number / 1e3:.3g}k"
    if magnitude >= 100:
        return f"{number:.0f}"
    return f"{number:.3g}"


def usual_range(lower: float, upper: float, value: float, expected: float) -> str:
    """The band as people read it, "usual 12–25": never below 0 for a series that is not
    (a count or a latency whose band, mean minus 3 sigma, dips under 0 is still never negative)."""
    if lower < 0 <= min(value, expected):
        lower = 0.0
    return f"usual {fmt(lower)}–{fmt(upper)}"


def duration(seconds: float) -> str:
    """A duration as a person says it: 45s, 12 min, 1.5 h, 3 days."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{_trim(seconds / 3600)} h"
    return f"{_trim(seconds / 86400)} days"


def _trim(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def clock(ts: float, tz: tzinfo) -> str:
    """A moment as a wall-clock time in a zone: 14:05 CEST."""
    return datetime.fromtimestamp(ts, tz).strftime("%H:%M %Z").strip()


def parse_duration(text: str) -> float:
    """Seconds (0 or more) in `30s`, `5m`, `2h`, `1d`, `1h30m`; ValueError naming what is wrong."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 15m, 2h, 1d, 1h30m)")
    return sum(float(n) * _UNITS[u] for n, u in parts)
