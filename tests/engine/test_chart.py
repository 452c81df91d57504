"""Charts render for every span a series can have, without warnings in the log."""

from __future__ import annotations

import warnings

import pytest

from engine.chart import render_chart

T0 = 1_795_000_000.0


@pytest.mark.parametrize("span_s", [0.1, 30, 160, 600, 160 * 60, 5 * 3600, 65 * 3600, 9 * 86400])
def test_a_chart_renders_quietly_whatever_the_span(span_s: float) -> None:
    # 160 s, 160 min and 65 h fell between matplotlib's tick intervals: it warned on each such
    # chart (seen in bench/ingest.py's log).
    points = [(T0 + i * span_s / 99, 100.0 + (i % 7)) for i in range(100)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = render_chart("svc.latency", points, [])
    assert png.startswith(b"\x89PNG")
