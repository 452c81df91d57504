"""The domain, one package per capability, free of storage and front ends.

    intake/     signals in: ingest, webhooks and pull sources, the stream worker, shard ownership
    detection/  the detector ensemble, anomaly episodes (hysteresis, flapping), forecasts, replay
    alerting/   alerts, risk, routing, silences, the notify pipeline, delivery, throttling, actions
    answers/    question parsing, retrieval, computed figures, narration, the built-in embedder
    brief/      the morning brief's content and schedule

Shared by all of them, at this level: the signal model (`signal`, with its fast validation
path `signal_fast`), the storage ports
(`ports`), errors, text formatting, failpoints, supervision of background loops,
charts and the demo world. Capabilities import each other in one direction only:
detection ← alerting ← intake, and detection, alerting ← answers ← brief
(tests/engine/test_layers.py enforces it).
"""

import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path


def compiled_is_current(source: Path, stamp: Path) -> bool:
    """Whether a compiled module built with this `stamp` (the SHA-256 of the source it was
    built from) matches `source` today. No source beside it (an install without sources):
    nothing to compare, so yes."""
    if not source.exists():
        return True
    try:
        built_from = stamp.read_text().strip()
    except OSError:
        return False
    return built_from == hashlib.sha256(source.read_bytes()).hexdigest()


def load_checked(name: str, allowed: bool = True) -> bool:
    """Import module `name` compiled (mypyc, see setup.py) if it was built from the source
    beside it, else from that source, with a warning; SIGOPS_PURE_PYTHON=1 takes the source
    too (to rule the compiled code out), as does `allowed=False` (a compiled module that
    needs another one compiled, which is not). True when the compiled one is in use. Call
    it before anything imports the module."""
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec else None
    if origin is None or origin.endswith(".py"):
        return False
    source = Path(origin).with_name(name.rsplit(".", 1)[1] + ".py")
    if os.environ.get("SIGOPS_PURE_PYTHON") or not allowed:
        if not source.exists():
            return True  # an install without sources: the compiled module is all there is
    elif compiled_is_current(source, source.with_suffix(".build")):
        return True
    else:
        logging.getLogger(__name__).warning(
            "the compiled %s was built from another version of %s: using the Python source "
            "(run `make install` to rebuild it)",
            name,
            source.name,
        )
    from_source = importlib.util.spec_from_file_location(name, source)
    assert from_source is not None and from_source.loader is not None
    module = importlib.util.module_from_spec(from_source)
    sys.modules[name] = module
    from_source.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, module)  # as an import would
    return False


COMPILED_VALIDATION = load_checked(f"{__name__}.signal_fast")  # the fast validation path is compiled
