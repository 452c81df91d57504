"""The optional compiled hot paths, built with mypyc: the detector ensemble, the
episodes and the replay (`engine/detection/ensemble.py`, `detect.py` and `replay.py`,
most of what a worker and `sigops detect` spend per point) and the fast validation path
(`engine/signal_fast.py`, most of what the HTTP server spends per signal). As C
extensions they run two to seven times as fast, from the same sources. The Python files
stay the reference and the fallback: without a C compiler, or with
SIGOPS_PURE_PYTHON=1, SigOps installs and runs on the sources alone. Beside each extension
the build writes its source's SHA-256 (`<module>.build`), so a compiled module older than
its source is never used (`engine.load_checked` checks).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

SOURCES = {
    "engine.detection.ensemble": Path("engine/detection/ensemble.py"),
    "engine.detection.detect": Path("engine/detection/detect.py"),
    "engine.detection.replay": Path("engine/detection/replay.py"),
    "engine.signal_fast": Path("engine/signal_fast.py"),
}


class OptionalBuildExt(build_ext):
    """Build the extension if this machine can; say why not and go on if it cannot."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the source is used instead
            print(f"sigops: compiled modules not built ({exc}); using the Python source", file=sys.stderr)
            return
        for ext in self.extensions:
            source = SOURCES.get(ext.name)
            if source is not None:
                stamp = Path(self.get_ext_fullpath(ext.name)).with_name(f"{source.stem}.build")
                stamp.write_text(hashlib.sha256(source.read_bytes()).hexdigest() + "\n")

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise RuntimeError(f"building {ext.name} failed: {exc}") from exc


def _extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("SIGOPS_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("sigops: mypyc not available; using the Python sources", file=sys.stderr)
        return []
    # A cache of mypyc's own: one that `mypy` (the lint) wrote can make mypyc fail on
    # sources it compiles from scratch ("value is not in list").
    cache = tempfile.mkdtemp(prefix="sigops-mypyc-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    try:
        # separate: each module its own library beside it, so each can be used or not alone
        return mypycify(
            ["--cache-dir", cache, *(str(path) for path in SOURCES.values())], opt_level="3", separate=True
        )
    except BaseException as exc:  # a type error mypyc refuses: never block the install
        print(f"sigops: compiled modules not built ({exc!r}); using the Python source", file=sys.stderr)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
