"""Detection benchmark on a generated, labelled corpus.

    .venv/bin/python bench/detect.py [--series 20] [--clean 40] [--seed 1]

Series at one point a minute. Anomalous series get one labelled window each, injected
after day 3.5 (so the seasonal model has history): spikes and dips of 5-10σ, level
shifts of 5-8σ, drifts reaching 6σ over two hours, variance x4 for an hour, a seasonal
break (a night as busy as a day), and silence (no points for an hour). Clean series run
a week: flat, daily-seasonal with a weekend dip, trending, and Poisson counts.

An alarm is an anomaly episode opening (what would page someone). An alarm inside a
window detects it (a one-point spike: on it or the 2 points after); any other alarm,
including one when the values return to normal after the window, is false.
Prints precision, recall and F1 by type, mean detection delay in points, false alarms
per clean series-day, the share of >=5σ spikes and steps caught within 3 points,
throughput in points/s on one core, the persisted state per series in bytes, and `sigops
detect` end to end on a 1M-row CSV (--cli-rows).
Then, when ../shared/bench/nab_dev exists, the real-data figures of bench/nab.py.
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nab  # bench/nab.py, beside this file

from engine.demo import poisson_sample
from engine.detection import COMPILED, COMPILED_EPISODES
from engine.detection.detect import Detection, state_bytes
from engine.signal import Signal

STEP = 60.0
DAY = 1440
T0 = 1_790_000_000.0 - (1_790_000_000.0 % 86400)  # a midnight UTC
TYPES = ("spike", "dip", "level_shift", "drift", "variance", "seasonal_break", "silence")


@dataclass
class Case:
    name: str
    kind: str  # anomaly type, or "clean"
    values: list[float | None]  # None: no point at that minute
    window: tuple[int, int] | None  # [start, end] point indexes of the anomaly
    sigma: float


def base_shape(rng: random.Random, shape: str, n: int) -> tuple[Callable[[int], float], float]:
    """A clean signal's expected value at minute i, and its noise sigma."""
    if shape == "flat":
        level, sigma = rng.uniform(50, 500), rng.uniform(2, 20)
        return (lambda i: level), sigma
    if shape == "seasonal":
        level = rng.uniform(100, 1000)
        amplitude, sigma = level * rng.uniform(0.2, 0.5), level * rng.uniform(0.01, 0.03)
        phase = rng.uniform(0, 2 * math.pi)

        def seasonal(i: int) -> float:
            # Weekends run at 70%, easing in and out over a few hours around midnight.
            x = ((T0 / 60 + i) / DAY + 3) % 7  # days since Monday 00:00
            weekend = 1.0 - 0.3 * (_ease(x - 5) - _ease(x - 7) + 1.0 - _ease(x))
            return (level + amplitude * math.sin(2 * math.pi * i / DAY + phase)) * weekend

        return seasonal, sigma
    if shape == "trend":
        level, sigma = rng.uniform(100, 500), rng.uniform(2, 10)
        slope = rng.choice((-1, 1)) * sigma * rng.uniform(0.005, 0.02)  # per minute
        return (lambda i: level + slope * i), sigma
    raise ValueError(shape)


def _ease(days: float) -> float:
    """0 before, 1 after, a smooth ramp over ±3 hours around 0."""
    return 1.0 / (1.0 + math.exp(-days * 24 / 1.5))


def make_case(rng: random.Random, kind: str, index: int, days: float) -> Case:
    n = int(days * DAY)
    count_series = kind in ("clean", "spike") and index % 4 == 3
    shape = ("flat", "seasonal", "trend", "flat")[index % 4]
    if kind == "seasonal_break":
        shape = "seasonal"
    if count_series:
        rate = rng.uniform(0.5, 20)
        values: list[float | None] = [float(poisson_sample(rng, rate)) for _ in range(n)]
        sigma = math.sqrt(rate)
        mean: Callable[[int], float] = lambda i: rate  # noqa: E731
    else:
        mean, sigma = base_shape(rng, shape, n)
        values = [mean(i) + rng.gauss(0, sigma) for i in range(n)]
    if kind == "clean":
        return Case(f"clean-{shape if not count_series else 'counts'}-{index}", kind, values, None, sigma)
    start = int(3.5 * DAY) + rng.randrange(0, DAY // 2)
    magnitude = rng.uniform(5, 10)
    sign = -1 if kind == "dip" else 1
    if kind in ("spike", "dip"):
        if count_series:
            values[start] = float(round(rate + max(10.0, magnitude * sigma * 2)))
        else:
            values[start] = mean(start) + sign * magnitude * sigma  # exactly that far off
        window = (start, start)
    elif kind == "level_shift":
        shift = rng.uniform(5, 8) * sigma * rng.choice((-1, 1))
        for i in range(start, start + 60):
            values[i] = mean(i) + shift + rng.gauss(0, sigma)
        window = (start, start + 59)
    elif kind == "drift":
        for k, i in enumerate(range(start, start + 120)):
            values[i] = mean(i) + 6 * sigma * (k + 1) / 120 + rng.gauss(0, sigma)
        window = (start, start + 119)
    elif kind == "variance":
        for i in range(start, start + 60):
            values[i] = mean(i) + rng.gauss(0, 4 * sigma)
        window = (start, start + 59)
    elif kind == "seasonal_break":
        # The quietest hour after day 3.5 gets daytime traffic.
        start = min(range(int(3.5 * DAY) + 30, n - 30), key=mean)
        busy = max(mean(3 * DAY + m) for m in range(DAY))
        for i in range(start - 30, start + 30):
            values[i] = busy + rng.gauss(0, sigma)
        window = (start - 30, start + 29)
    elif kind == "silence":
        for i in range(start, start + 60):
            values[i] = None
        window = (start, start + 59)
    else:
        raise ValueError(kind)
    return Case(f"{kind}-{shape}-{index}", kind, values, window, sigma)


def run_case(case: Case) -> tuple[list[int], int, float]:
    """Alarm indexes, points observed, seconds spent observing."""
    detection = Detection()
    alarms: list[int] = []
    signals = [
        Signal(f"{case.name}-{i}", T0 + STEP * i, "bench", "metric", case.name, v, {}, None, "info")
        if v is not None
        else None
        for i, v in enumerate(case.values)
    ]
    started = time.perf_counter()
    observed = 0
    for i, signal in enumerate(signals):
        if signal is None:
            if detection.sweep(T0 + STEP * i):  # live, silence is found by the periodic sweep
                alarms.append(i)
            continue
        observed += 1
        if detection.observe(signal).transition == "opened":
            alarms.append(i)
    return alarms, observed, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=20, help="series per anomaly type")
    parser.add_argument("--clean", type=int, default=40, help="clean series (a week each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cli-rows", type=int, default=1_000_000, help="rows of the CSV `sigops detect` replays (0: skip)"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = [make_case(rng, kind, i, 4.5) for kind in TYPES for i in range(args.series)]
    cases += [make_case(rng, "clean", i, 7.0) for i in range(args.clean)]

    points = 0
    seconds = 0.0
    per_type: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    delays: dict[str, list[int]] = defaultdict(list)
    fast = [0, 0]  # >=5σ spikes/dips/steps caught within 3 points, of all
    clean_alarms, clean_days = 0, 0.0
    for case in cases:
        alarms, observed, spent = run_case(case)
        points += observed
        seconds += spent
        if case.window is None:
            clean_alarms += len(alarms)
            clean_days += len(case.values) / DAY
            continue
        start, end = case.window
        # A spike may be caught on any of its first 3 points; a window only while it lasts.
        inside = [a for a in alarms if start <= a <= (start + 2 if start == end else end)]
        stats = per_type[case.kind]
        stats["windows"] += 1
        stats["false"] += len(alarms) - len(inside)
        if inside:
            stats["detected"] += 1
            stats["true"] += 1
            delays[case.kind].append(inside[0] - start)
        if case.kind in ("spike", "dip", "level_shift"):
            fast[1] += 1
            fast[0] += bool(inside) and inside[0] - start <= 2  # the 1st, 2nd or 3rd point

    print(f"corpus: {len(cases)} series, {points:,} points ({len(TYPES)} anomaly types x {args.series}, "
          f"{args.clean} clean series x 7 days), one point a minute")  # fmt: skip
    print(f"{'type':<15}{'precision':>10}{'recall':>8}{'F1':>6}{'delay (pts)':>13}")
    for kind in TYPES:
        s = per_type[kind]
        precision = s["true"] / (s["true"] + s["false"]) if s["true"] + s["false"] else 0.0
        recall = s["detected"] / s["windows"] if s["windows"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        delay = sum(delays[kind]) / len(delays[kind]) if delays[kind] else float("nan")
        print(f"{kind:<15}{precision:>10.2f}{recall:>8.2f}{f1:>6.2f}{delay:>13.1f}")
    print(f"false alarms on clean series: {clean_alarms} in {clean_days:.0f} series-days = "
          f"{clean_alarms / clean_days:.3f} per series-day (target < 0.1)")  # fmt: skip
    print(f">=5σ spikes, dips and steps caught within 3 points: {fast[0]}/{fast[1]}")
    build = "compiled detector" if COMPILED else "detector from the Python source"
    build += ", compiled episodes" if COMPILED_EPISODES else ", episodes from the Python source"
    print(f"throughput: {points / seconds:,.0f} points/s on one core (whole ensemble + hysteresis, {build})")
    print(f"state per series: {state_bytes(Detection())} bytes")
    if args.cli_rows:
        cli_throughput(args.cli_rows, rng)
    if nab.KIT.exists():
        print()
        nab.run(nab.KIT)
    else:
        print(f"(no NAB dev kit at {nab.KIT}: real-data figures skipped)")


def cli_throughput(rows: int, rng: random.Random) -> None:
    """`sigops detect` end to end on a generated CSV: start-up, parse, detect, write."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "series.csv")
        with source.open("w") as out:
            out.write("timestamp,value\n")
            start = time.time() - STEP * rows  # ending now: points in the future are refused
            out.writelines(
                f"{start + STEP * i:.0f},{100 + 10 * math.sin(i / 229) + rng.gauss(0, 2):.3f}\n"
                for i in range(rows)
            )
        sigops = Path(sys.executable).with_name("sigops")
        started = time.perf_counter()
        subprocess.run(
            [str(sigops), "detect", str(source), "--out", str(Path(tmp, "scored.csv"))],
            check=True,
            capture_output=True,
        )
        spent = time.perf_counter() - started
    print(f"sigops detect on a {rows:,}-row CSV: {spent:.1f} s = {rows / spent:,.0f} points/s end to end")


if __name__ == "__main__":
    main()
