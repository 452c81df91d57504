"""Detection: what is abnormal in a series, point by point.

Owns the detector ensemble (`ensemble`: level, seasonality, counts, shifts, drift,
silence), the anomaly episodes with hysteresis and flapping (`detect`), trend forecasts
to a limit (`forecast`), and the offline replay of a CSV through the same code
(`replay`). It imports no other capability.
"""

from engine.detection.detect import Anomaly, Detection, Hysteresis, Observation, state_bytes
from engine.detection.ensemble import Assessment, EnsembleDetector, LocalHours, SeriesModel, score_of
from engine.detection.forecast import Forecast, forecast
from engine.detection.replay import read_points, replay, write_csv

__all__ = [
    "Anomaly", "Assessment", "Detection", "EnsembleDetector", "Forecast", "Hysteresis", "LocalHours",
    "Observation", "SeriesModel", "forecast", "read_points", "replay", "score_of", "state_bytes",
    "write_csv",
]  # fmt: skip
