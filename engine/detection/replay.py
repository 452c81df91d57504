"""Offline replay: a CSV of `timestamp,value` rows through the live detection, row by row.

For tuning and backfill, so the numbers are exactly those the live engine produces:
the same `Detection` (ensemble + hysteresis) is fed the rows in file order, as if they
were streamed. Compiled with mypyc when it can be, like the ensemble (`setup.py`): this
loop, the parsing and the writing are most of what `sigops detect` spends beyond it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, TextIO

from engine.detection.detect import Detection
from engine.errors import PayloadError
from engine.signal import Signal, parse_timestamp

OUT_COLUMNS = ("timestamp", "value", "score", "expected", "lower", "upper", "anomaly", "alert")
_TS_NAMES = {"timestamp", "ts", "time"}
MAX_REPORTED = 5
_BLOCK_ROWS: Final = 4096  # rows written at once by write_csv


@dataclass(slots=True, init=False)
class Point:  # not frozen: frozen construction costs several times more, a million times a file
    line: int
    raw_ts: str
    ts: float
    value: float

    # Written out: compiled, a dataclass's generated __init__ runs interpreted.
    def __init__(self, line: int, raw_ts: str, ts: float, value: float) -> None:
        self.line, self.raw_ts, self.ts, self.value = line, raw_ts, ts, value


def read_points(lines: Iterable[str]) -> list[Point]:
    """Parse the CSV, or raise PayloadError naming every bad line (up to five)."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise PayloadError("the file is empty; expected a header row: timestamp,value")
    names = [h.strip().lower() for h in header]
    if len(names) < 2 or names[0] not in _TS_NAMES or names[1] != "value":
        raise PayloadError(f"line 1: expected a header row 'timestamp,value', got {','.join(header)!r}")
    points: list[Point] = []
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        if not row or (not row[0].strip() and not "".join(row).strip()):
            continue
        if len(row) < 2:
            problems.append(f"line {line}: expected two columns, timestamp and value")
            continue
        try:
            ts = parse_timestamp(row[0].strip())
        except ValueError as exc:
            problems.append(f"line {line}: timestamp {exc}")
            continue
        try:
            value = float(row[1])
        except ValueError:
            problems.append(f"line {line}: value {row[1].strip()[:40]!r} is not a number")
            continue
        if not math.isfinite(value):
            problems.append(f"line {line}: value must be a finite number")
            continue
        points.append(Point(line, row[0].strip(), ts, value))
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise PayloadError("; ".join(problems[:MAX_REPORTED]) + more)
    return points


def rank_score(z: float) -> float:
    """How surprising a point is, in [0, 1), monotone in |z| and never saturated: 4σ is 0.5,
    12σ 0.75, 100σ 0.96, and a 10⁶σ point still ranks above a 10⁵σ one (written with 8
    significant digits). The live score (`score_of`) is squashed for the open and keep
    thresholds; this one is for ranking."""
    magnitude = abs(z)
    return magnitude / (magnitude + 4.0)


def news_score(z: float, opens: bool) -> float:
    """The `score` column: how surprising the point is as news. A point that opens an alert
    ranks by its |z| in [0.5, 1); any other point (inside an episode, or held back by the
    refractory period) ranks by its |z| in [0, 0.5): the alerts first, the strongest first."""
    return (1.0 + rank_score(z)) / 2 if opens else rank_score(z) / 2


def replay(points: Iterable[Point], detection: Detection, series: str = "replay") -> Iterator[list[str]]:
    """One output row per point: timestamp, value, score, expected, lower, upper, anomaly, alert.

    `anomaly` is 1 on every abnormal point; `alert` is 1 only where an alert would open for
    a person with these settings (an episode opening), the column to judge noise by.
    """
    keep_score, observe = detection.policy.keep_score, detection.observe
    no_labels: dict[str, str] = {}
    for point in points:
        obs = observe(
            Signal(
                f"{series}-{point.line}",
                point.ts,
                "replay",
                "metric",
                series,
                point.value,
                no_labels,
                None,
                "info",
            )
        )
        verdict = obs.assessment
        if verdict is None:  # warming up: no opinion yet
            yield [point.raw_ts, _num(point.value), "0", "", "", "", "0", "0"]
            continue
        # The point itself is abnormal: past the open score, or past the keep score while
        # an episode is open (the calm points that close an episode are not).
        anomalous = obs.anomaly is not None or (obs.open and verdict.score >= keep_score)
        opened = obs.transition == "opened"
        magnitude = abs(verdict.z)
        rank = magnitude / (magnitude + 4.0)  # rank_score and news_score, inline (hot loop)
        yield [
            point.raw_ts,
            f"{point.value:.6g}",  # as _num, inline: this loop is the whole cost of `sigops detect`
            f"{(1.0 + rank) / 2 if opened else rank / 2:.8g}",
            f"{verdict.expected:.6g}",
            f"{verdict.lower:.6g}",
            f"{verdict.upper:.6g}",
            "1" if anomalous else "0",
            "1" if opened else "0",
        ]


def write_csv(rows: Iterable[list[str]], out: TextIO) -> int:
    """Write the rows as CSV; return how many. Only the timestamp, as the input spelled it,
    can need quoting (the rest are numbers): rows whose timestamp does not are joined and
    written in blocks, the others go through the csv module (a seventh of the time of
    `sigops detect` was csv.writer on rows that never need it)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(OUT_COLUMNS)
    count = 0
    block: list[str] = []
    for row in rows:
        first = row[0]
        if "," in first or '"' in first or "\n" in first or "\r" in first:
            if block:
                out.write("".join(block))
                block.clear()
            writer.writerow(row)
        else:
            block.append(",".join(row) + "\n")
            if len(block) >= _BLOCK_ROWS:
                out.write("".join(block))
                block.clear()
        count += 1
    if block:
        out.write("".join(block))
    return count


def _num(value: float) -> str:
    return f"{value:.6g}"
