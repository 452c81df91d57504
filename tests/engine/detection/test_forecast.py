"""Trend forecasts on crafted series."""

from __future__ import annotations

import random
import re

from engine.detection.forecast import forecast, limit_for

T0 = 1_795_000_000.0


def climbing(
    rate_per_hour: float, start: float = 40.0, hours: float = 6, sd: float = 1.0
) -> list[tuple[float, float]]:
    rng = random.Random(1)
    return [(T0 + 60 * i, start + rate_per_hour * i / 60 + rng.gauss(0, sd)) for i in range(int(hours * 60))]


def test_a_steady_climb_gives_a_crossing_time() -> None:
    points = climbing(5.0)  # 40 -> 70 over 6 h, limit 100: about 6 h more
    result = forecast("disk.used_pct", points, 100.0)
    assert result is not None
    assert 5.5 * 3600 < result.eta_s < 6.5 * 3600
    assert abs(result.slope_per_hour - 5.0) < 0.3
    assert re.match(
        r"at this rate disk\.used_pct crosses 100 in about (5\.\d|6(\.\d)?) h \(now 70", result.text
    )


def test_spikes_do_not_bend_the_trend() -> None:
    points = climbing(5.0)
    spiky = [(t, v + (500 if i % 50 == 0 else 0)) for i, (t, v) in enumerate(points)]
    result = forecast("disk.used_pct", spiky, 100.0)
    assert result is not None and abs(result.slope_per_hour - 5.0) < 0.3


def test_no_forecast_for_noise_flat_or_moving_away_or_too_far() -> None:
    assert forecast("x", climbing(0.0, sd=3.0), 100.0) is None  # flat noise
    assert forecast("x", climbing(-5.0, start=90), 100.0) is None  # going down, limit above
    assert forecast("x", climbing(0.01), 100.0, horizon_s=86400) is None  # crosses in months
    assert forecast("x", climbing(5.0)[:5], 100.0) is None  # too few points


def test_limits_come_from_a_label_or_a_percentage_name() -> None:
    assert limit_for("search.queue_depth", {"limit": "1000"}) == 1000.0
    assert limit_for("disk.used_pct", {}) == 100.0
    assert limit_for("search.queue_depth", {}) is None
    assert limit_for("x", {"limit": "lots"}) is None
