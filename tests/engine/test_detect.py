"""The robust z-score detector: finds spikes, stays quiet on noise, survives a restart."""

from __future__ import annotations

import random

import pytest

from engine.detect import Detection, RobustZDetector, anomaly_score
from engine.signal import Signal, make_signal

T0 = 1_795_000_000.0


def series(values: list[float], name: str = "pay.latency") -> list[Signal]:
    return [
        make_signal(series=name, value=v, ts=T0 + 60 * i, labels={"service": "pay"})
        for i, v in enumerate(values)
    ]


def noisy(n: int, seed: int = 1, mean: float = 200.0, sd: float = 10.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def anomalies(detection: Detection, signals: list[Signal]) -> list[int]:
    return [i for i, s in enumerate(signals) if detection.observe(s).anomaly is not None]


@pytest.mark.parametrize(
    ("name", "values", "expected_at"),
    [
        ("spike up", noisy(300)[:200] + [400.0] + noisy(99, seed=2), [200]),
        ("dip", noisy(300)[:150] + [80.0] + noisy(149, seed=3), [150]),
        ("clean noise", noisy(2000, seed=4), []),
        ("flat then blip", [5.0] * 100 + [50.0] + [5.0] * 20, [100]),
        ("warm-up is silent", [1.0, 100.0, 1.0, 500.0] + noisy(20, mean=1, sd=0.1), []),
    ],
)
def test_detector_table(name: str, values: list[float], expected_at: list[int]) -> None:
    detection = Detection([RobustZDetector(warmup=30)])
    assert anomalies(detection, series(values)) == expected_at, name


def test_anomaly_says_what_was_expected_and_why() -> None:
    detection = Detection([RobustZDetector(warmup=30)])
    signals = series(noisy(100) + [420.0])
    found = [o.anomaly for o in map(detection.observe, signals) if o.anomaly]
    assert len(found) == 1
    anomaly = found[0]
    assert anomaly.lower < anomaly.expected < anomaly.upper < anomaly.value
    assert 190 < anomaly.expected < 210
    assert anomaly.score > 0.99
    assert "pay.latency 420 vs expected" in anomaly.explanation and "σ above" in anomaly.explanation
    assert anomaly.service == "pay"


def test_an_outlier_does_not_drag_the_baseline() -> None:
    detection = Detection([RobustZDetector(warmup=30)])
    values = noisy(100) + [5000.0] + noisy(5, seed=9)
    flagged = anomalies(detection, series(values))
    assert flagged == [100]  # the points after the outlier are judged against the old normal


def test_state_survives_a_restart() -> None:
    values = noisy(200) + [420.0]
    signals = series(values)
    first = Detection([RobustZDetector(warmup=30)])
    for s in signals[:200]:
        first.observe(s)
    saved = first.dirty_states()
    assert len(saved["pay.latency"]) < 64  # bytes per series
    assert first.dirty_states() == {}  # nothing changed since

    restarted = Detection([RobustZDetector(warmup=30)])
    restarted.restore(saved)
    result = restarted.observe(signals[200])
    assert result.anomaly is not None  # no warm-up again: it remembered what normal is


def test_unreadable_saved_state_means_relearning_not_crashing() -> None:
    detection = Detection([RobustZDetector()])
    detection.restore({"x": b"\x09garbage"})
    assert not detection.known("x")


def test_score_is_monotonic_in_z_and_bounded() -> None:
    scores = [anomaly_score(z) for z in (0, 2, 3, 4, 5, 6, 10, 100)]
    assert scores == sorted(scores)
    assert 0 <= scores[0] and scores[-1] <= 1
    assert anomaly_score(-6) == anomaly_score(6)
