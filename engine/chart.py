"""Charts of a series around an anomaly: a PNG that reads on a phone.

The line is the series; the shaded band is the usual range (the detector's expected
band where it flagged a point, a trailing median ± 3 robust sigma elsewhere); red dots
are the anomalous points; dashed lines are changes (deploys). Rendering uses
matplotlib's object API (no pyplot global state), so it is safe off the event loop.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from engine.detection.detect import Anomaly

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WINDOW = 30  # trailing points for the usual range where the detector said nothing
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class ChartMark:
    """A moment worth a line on the chart (a deploy, the alert's start)."""

    ts: float
    label: str


def usual_band(
    points: Sequence[tuple[float, float]], flagged: set[float]
) -> list[tuple[float, float, float]]:
    """(expected, lower, upper) per point from the trailing unflagged values."""
    band: list[tuple[float, float, float]] = []
    history: list[float] = []
    for ts, value in points:
        if len(history) >= 5:
            median = statistics.median(history)
            spread = (
                MAD_TO_SIGMA * statistics.median(abs(v - median) for v in history)
                or abs(median) * 0.05
                or 1.0
            )
            band.append((median, median - 3 * spread, median + 3 * spread))
        else:
            band.append((value, value, value))
        if ts not in flagged:
            history.append(value)
            if len(history) > WINDOW:
                history.pop(0)
    return band


def unit_of(series: str) -> str:
    """The unit a series' name says it is in ("checkout.latency_p99_ms" → "ms"), else ""."""
    name = series.lower()
    for suffixes, unit in _UNITS:
        if name.endswith(suffixes):
            return unit
    return ""


_UNITS = (  # only what a name says outright: a bare "latency" may be seconds or milliseconds
    (("_ms", "_millis", "_milliseconds"), "ms"),
    (("_seconds", "_secs"), "s"),
    (("_pct", "_percent"), "%"),
    (("_bytes",), "bytes"),
)


def render_chart(
    title: str,
    points: Sequence[tuple[float, float]],
    anomalies: Sequence[Anomaly],
    marks: Sequence[ChartMark] = (),
    tz: tzinfo = UTC,
    *,
    threshold: float | None = None,
    unit: str = "",
    band: bool = True,
    episode_start: float | None = None,
) -> bytes:
    """A PNG of the series with its usual range, anomalous points and marks; ValueError with no points.

    Made to be read on a phone: few round time ticks in the named time zone, the unit on the
    axis, the episode shaded, labels kept inside the picture, and a usual range that never dips
    below 0 for a series that does not."""
    if len(points) < 2:
        raise ValueError(f"not enough points to chart {title!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: only when a chart is drawn
    from matplotlib.dates import date2num
    from matplotlib.figure import Figure

    ranges = _usual_ranges(points, anomalies)

    def x(ts: float) -> float:
        return float(date2num(datetime.fromtimestamp(ts, tz)))

    times = [x(ts) for ts, _ in points]
    values = [v for _, v in points]

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if episode_start is not None and points[0][0] <= episode_start <= points[-1][0]:
        ax.axvspan(x(episode_start), times[-1], color="#fdd0a2", alpha=0.35, label="alert")
    if band:
        ax.fill_between(
            times,
            [b[1] for b in ranges],
            [b[2] for b in ranges],
            color="#9ecae1",
            alpha=0.45,
            label="usual range",
        )
        ax.plot(times, [b[0] for b in ranges], color="#3182bd", linewidth=1, linestyle=":", label="expected")
    ax.plot(times, values, color="#222222", linewidth=2, label="value")
    if threshold is not None:
        ax.axhline(
            threshold, color="#d62728", linestyle="--", linewidth=1.5, label=f"threshold {threshold:g}"
        )
    _draw_marks(ax, anomalies, marks, points, x)
    ax.set_title(title[:60], fontsize=16)
    _label_axes(ax, points, tz, unit)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _usual_ranges(
    points: Sequence[tuple[float, float]], anomalies: Sequence[Anomaly]
) -> list[tuple[float, float, float]]:
    """The band to shade: the detector's own where it flagged a point; never below 0 unless the series is."""
    by_ts = {a.ts: a for a in anomalies}
    ranges = usual_band(points, set(by_ts))
    for i, (ts, _) in enumerate(points):
        if ts in by_ts:
            a = by_ts[ts]
            ranges[i] = (a.expected, a.lower, a.upper)
    if min(v for _, v in points) >= 0:
        ranges = [(e, max(lo, 0.0), hi) for e, lo, hi in ranges]
    return ranges


def _draw_marks(
    ax: Axes,
    anomalies: Sequence[Anomaly],
    marks: Sequence[ChartMark],
    points: Sequence[tuple[float, float]],
    x: Callable[[float], float],
) -> None:
    """Red dots on the anomalous points; a dashed line per change, its label kept inside the picture."""
    flagged = [(x(a.ts), a.value) for a in anomalies if points[0][0] <= a.ts <= points[-1][0]]
    if flagged:
        ax.scatter([t for t, _ in flagged], [v for _, v in flagged], color="#d62728", s=40, zorder=5,
                   label="anomalous")  # fmt: skip
    middle = (points[0][0] + points[-1][0]) / 2
    for mark in marks:
        if points[0][0] <= mark.ts <= points[-1][0]:
            ax.axvline(x(mark.ts), color="#ff7f0e", linestyle="--", linewidth=1.5)
            side = "left" if mark.ts < middle else "right"
            ax.annotate(f" {mark.label[:28]} ", (x(mark.ts), 0.98), xycoords=("data", "axes fraction"),
                        fontsize=11, color="#ff7f0e", ha=side, va="top")  # fmt: skip


def _label_axes(ax: Axes, points: Sequence[tuple[float, float]], tz: tzinfo, unit: str) -> None:
    """Few round time ticks in the named zone, the unit on the value axis, a floor at 0 for counts."""
    from matplotlib.dates import HOURLY, MINUTELY, SECONDLY, AutoDateLocator, DateFormatter

    ax.tick_params(labelsize=12)
    locator = AutoDateLocator(tz=tz, minticks=3, maxticks=6)
    # With at most 6 ticks its intervals stop short of the next unit (2.5-3 min, 2.5-3 h and
    # 60-72 h had none, and it warned on every such chart): one more step each closes the gap.
    for freq, longest in ((SECONDLY, 60), (MINUTELY, 60), (HOURLY, 24)):
        locator.intervald[freq] = [*locator.intervald[freq], longest]
    ax.xaxis.set_major_locator(locator)
    span = points[-1][0] - points[0][0]
    # Past a day the ticks name the day too: three "00:00" ticks say nothing.
    labels = next(f for limit, f in _TICK_LABELS if span < limit)
    ax.xaxis.set_major_formatter(DateFormatter(labels, tz=tz))
    ax.set_xlabel(f"time ({_zone_name(tz, points[-1][0])})", fontsize=11)
    if unit:
        ax.set_ylabel(unit, fontsize=12)
    values = [v for _, v in points]
    if 0 <= min(values) <= 0.5 * max(values):
        ax.set_ylim(bottom=0)  # a count or a rate: its floor is 0, not wherever the data began
    ax.grid(alpha=0.3)
    ax.legend(fontsize=11, loc="upper left", framealpha=0.8)


_TICK_LABELS = ((600, "%H:%M:%S"), (86400, "%H:%M"), (6 * 86400, "%a %H:%M"), (math.inf, "%d %b"))


def _zone_name(tz: tzinfo, ts: float) -> str:
    return str(getattr(tz, "key", None) or datetime.fromtimestamp(ts, tz).tzname() or "UTC")


def warm_up_charts() -> None:
    """Import matplotlib and build its font cache now, so the first alert's chart is not the slow one."""
    render_chart("warm-up", [(0.0, 1.0), (60.0, 2.0)], ())


def render_small_multiples(
    panels: Sequence[tuple[str, Sequence[tuple[float, float]], Sequence[Anomaly]]], tz: tzinfo = UTC
) -> bytes:
    """One PNG with a small chart per series (the brief's top anomalies); ValueError with no data."""
    usable = [p for p in panels if len(p[1]) >= 2][:4]
    if not usable:
        raise ValueError("no series with enough points to chart")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import DateFormatter, date2num
    from matplotlib.figure import Figure

    rows = (len(usable) + 1) // 2
    fig = Figure(figsize=(10, 3.2 * rows), dpi=90)
    FigureCanvasAgg(fig)
    for n, (title, points, anomalies) in enumerate(usable, start=1):
        ax = fig.add_subplot(rows, 2 if len(usable) > 1 else 1, n)
        xs = [float(date2num(datetime.fromtimestamp(ts, tz))) for ts, _ in points]
        ax.plot(xs, [v for _, v in points], color="#222222", linewidth=1.5)
        marked = [(float(date2num(datetime.fromtimestamp(a.ts, tz))), a.value) for a in anomalies]
        if marked:
            ax.scatter([x for x, _ in marked], [y for _, y in marked], color="#d62728", s=25, zorder=5)
        ax.set_title(title[:40], fontsize=13)
        ax.tick_params(labelsize=10)
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=tz))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
