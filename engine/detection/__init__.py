"""Detection: what is abnormal in a series, point by point.

Owns the detector ensemble (`ensemble`: level, seasonality, counts, shifts, drift,
silence), the anomaly episodes with hysteresis and flapping (`detect`), trend forecasts
to a limit (`forecast`), and the offline replay of a CSV through the same code
(`replay`). It imports no other capability.

The ensemble, the episodes (`detect`) and the replay may be installed compiled (mypyc,
see `setup.py`): the same sources as C extensions, two to seven times as fast. Each is
used only when it was built from the source beside it; otherwise (the source was edited
since) the source is loaded, with a warning. A compiled module reads the objects of the
one it builds on as native ones, so it is used only when that one is compiled too: the
episodes with the ensemble, the replay with the episodes and the validation path.
"""

from engine import COMPILED_VALIDATION, load_checked

COMPILED = load_checked(f"{__name__}.ensemble")  # the ensemble in use is the mypyc-compiled one
COMPILED_EPISODES = load_checked(f"{__name__}.detect", allowed=COMPILED)  # and the episodes
COMPILED_REPLAY = load_checked(f"{__name__}.replay", allowed=COMPILED_EPISODES and COMPILED_VALIDATION)

from engine.detection.detect import Anomaly, Detection, Hysteresis, Observation, state_bytes  # noqa: E402
from engine.detection.ensemble import (  # noqa: E402
    Assessment,
    EnsembleDetector,
    LocalHours,
    SeriesModel,
    score_of,
)
from engine.detection.forecast import Forecast  # noqa: E402
from engine.detection.replay import read_points, write_csv  # noqa: E402

# The functions `forecast` and `replay` are not re-exported here: under their modules' own
# names they would hide the modules (`engine.detection.replay` would be the function).

__all__ = [
    "COMPILED", "COMPILED_EPISODES", "COMPILED_REPLAY", "Anomaly", "Assessment", "Detection",
    "EnsembleDetector", "Forecast", "Hysteresis", "LocalHours", "Observation", "SeriesModel",
    "read_points", "score_of", "state_bytes", "write_csv",
]  # fmt: skip
