"""Detection: what is abnormal in a series, point by point.

Owns the detector ensemble (`ensemble`: level, seasonality, counts, shifts, drift,
silence), the anomaly episodes with hysteresis and flapping (`detect`), trend forecasts
to a limit (`forecast`), and the offline replay of a CSV through the same code
(`replay`). It imports no other capability.

The ensemble may be installed compiled (mypyc, see `setup.py`): the same source as a C
extension, about twice as fast. It is used only when it was built from the source beside
it; otherwise (the source was edited since) the source is loaded, with a warning.
"""

import hashlib
import importlib.util
import logging
import sys
from pathlib import Path


def compiled_is_current(source: Path, stamp: Path) -> bool:
    """Whether a compiled ensemble built with this `stamp` (the SHA-256 of the source it was
    built from) matches `source` today. No source beside it (an install without sources):
    nothing to compare, so yes."""
    if not source.exists():
        return True
    try:
        built_from = stamp.read_text().strip()
    except OSError:
        return False
    return built_from == hashlib.sha256(source.read_bytes()).hexdigest()


def _choose_ensemble() -> bool:
    """Load the ensemble: compiled when current, else the source. True when compiled."""
    name = f"{__name__}.ensemble"
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec else None
    if origin is None or origin.endswith(".py"):
        return False
    here = Path(__file__).resolve().parent
    if compiled_is_current(here / "ensemble.py", here / "ensemble.build"):
        return True
    logging.getLogger(__name__).warning(
        "the compiled detector was built from another version of engine/detection/ensemble.py: "
        "using the Python source (run `make install` to rebuild it)"
    )
    source = importlib.util.spec_from_file_location(name, here / "ensemble.py")
    assert source is not None and source.loader is not None
    module = importlib.util.module_from_spec(source)
    sys.modules[name] = module
    source.loader.exec_module(module)
    return False


COMPILED = _choose_ensemble()  # the ensemble in use is the mypyc-compiled one

from engine.detection.detect import Anomaly, Detection, Hysteresis, Observation, state_bytes  # noqa: E402
from engine.detection.ensemble import (  # noqa: E402
    Assessment,
    EnsembleDetector,
    LocalHours,
    SeriesModel,
    score_of,
)
from engine.detection.forecast import Forecast, forecast  # noqa: E402
from engine.detection.replay import read_points, replay, write_csv  # noqa: E402

__all__ = [
    "COMPILED", "Anomaly", "Assessment", "Detection", "EnsembleDetector", "Forecast", "Hysteresis",
    "LocalHours", "Observation", "SeriesModel", "compiled_is_current", "forecast", "read_points",
    "replay", "score_of", "state_bytes", "write_csv",
]  # fmt: skip
