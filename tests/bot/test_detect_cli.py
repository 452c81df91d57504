"""`sigops detect`: a CSV replayed through the live detection, and bad files refused clearly."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from bot.app import build_detection
from bot.settings import Settings
from engine.detection.replay import news_score, rank_score
from engine.signal import Signal, parse_timestamp
from tests.bot.test_cli import run


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def series_rows(n: int = 200, spike_at: int = 150) -> list[str]:
    rng = random.Random(1)
    rows = ["timestamp,value"]
    for i in range(n):
        value = 420.0 if i == spike_at else 200 + rng.gauss(0, 10)
        stamp = f"2026-11-20T{8 + i // 60:02d}:{i % 60:02d}:00Z" if i % 2 else str(1_795_161_600 + 60 * i)
        rows.append(f"{stamp},{value:.3f}")
    return rows


def test_replay_writes_one_row_per_input_and_flags_the_spike(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", series_rows())
    result = run(["detect", str(source), "--out", str(tmp_path / "out.csv")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "200 rows written" in result.stderr
    with (tmp_path / "out.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "value", "score", "expected", "lower", "upper", "anomaly", "alert"]
    assert len(rows) == 200
    flagged = [i for i, row in enumerate(rows) if row["anomaly"] == "1"]
    assert flagged == [150]
    spike = rows[150]
    assert float(spike["score"]) > 0.8 and spike["alert"] == "1"  # |z| over 20
    assert [i for i, row in enumerate(rows) if row["alert"] == "1"] == [150]  # one alert for the spike
    assert float(spike["lower"]) < float(spike["expected"]) < float(spike["upper"]) < 420
    assert all(0.0 <= float(row["score"]) <= 1.0 for row in rows)
    assert rows[0]["expected"] == ""  # warming up: no opinion yet


def test_replay_numbers_are_the_live_engines(tmp_path: Path) -> None:
    rows = series_rows(120, spike_at=90)
    source = write(tmp_path / "in.csv", rows)
    result = run(["detect", str(source)], tmp_path)
    assert result.returncode == 0, result.stderr
    replayed = list(csv.DictReader(result.stdout.splitlines()))
    live = build_detection(Settings())
    for line, row in zip(rows[1:], replayed, strict=True):
        stamp, value = line.split(",")
        obs = live.observe(
            Signal("x", parse_timestamp(stamp), "t", "metric", "replay", float(value), {}, None, "info")
        )
        opens = obs.transition == "opened"
        expected_score = f"{news_score(obs.assessment.z, opens):.8g}" if obs.assessment else "0"
        assert row["score"] == expected_score
        assert row["alert"] == ("1" if obs.transition == "opened" else "0")


def test_the_score_ranks_and_does_not_saturate() -> None:
    scores = [rank_score(z) for z in (0.0, 3.0, 4.0, 12.0, 100.0, 1e5, 1e6)]
    assert scores == sorted(scores) and len({f"{s:.8g}" for s in scores}) == len(scores)
    assert rank_score(4.0) == 0.5 and rank_score(-12.0) == rank_score(12.0)
    # Alerts rank above every other point, the strongest first.
    assert news_score(4.3, True) > news_score(1e9, False) and news_score(9, True) > news_score(5, True)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([], "the file is empty"),
        (["1795161600,3", "1795161660,4"], "line 1: expected a header row 'timestamp,value'"),
        (["timestamp,value", "1795161600,abc"], "line 2: value 'abc' is not a number"),
        (["timestamp,value", "yesterday,3"], "line 2: timestamp 'yesterday' is neither ISO-8601"),
        (["timestamp,value", "1795161600,nan"], "line 2: value must be a finite number"),
        (["timestamp,value", "1795161600"], "line 2: expected two columns"),
    ],
)
def test_bad_files_are_refused_naming_the_line(tmp_path: Path, rows: list[str], fragment: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("\n".join(rows) + ("\n" if rows else ""))
    result = run(["detect", str(source)], tmp_path)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["detect", str(tmp_path / "nope.csv")], tmp_path)
    assert result.returncode == 2 and "No such file" in result.stderr
