"""Detection as configured: the one builder `serve`, the workers and `sigops detect` share."""

from __future__ import annotations

from bot.settings import Settings
from engine.detection.detect import Detection, Hysteresis
from engine.detection.ensemble import EnsembleDetector, LocalHours


def build_detection(settings: Settings) -> Detection:
    """The detector ensemble and hysteresis as configured (shared by `serve` and `detect`)."""
    return Detection(
        EnsembleDetector(warmup=settings.detect_warmup, hours=LocalHours(settings.tz)),
        Hysteresis(
            open_score=settings.detect_open_score,
            keep_score=settings.detect_keep_score,
            quiet_points=settings.detect_quiet_points,
        ),
    )
