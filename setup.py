"""The optional compiled detector: `engine/detection/ensemble.py` built with mypyc.

The ensemble's per-point update is most of what a worker and `sigops detect` spend; as a
C extension it runs about twice as fast, from the same source. The Python file stays the
reference and the fallback: without a C compiler, or with SIGOPS_PURE_PYTHON=1, SigOps
installs and runs on the source alone. Beside the extension the build writes the source's
SHA-256 (`ensemble.build`), so a compiled module older than its source is never used
(`engine/detection/__init__.py` checks).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

SOURCE = Path("engine/detection/ensemble.py")


class OptionalBuildExt(build_ext):
    """Build the extension if this machine can; say why not and go on if it cannot."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the source is used instead
            print(f"sigops: compiled detector not built ({exc}); using the Python source", file=sys.stderr)
            return
        for ext in self.extensions:
            if ext.name == "engine.detection.ensemble":
                stamp = Path(self.get_ext_fullpath(ext.name)).with_name("ensemble.build")
                stamp.write_text(hashlib.sha256(SOURCE.read_bytes()).hexdigest() + "\n")

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
        print("sigops: mypyc not available; using the Python detector", file=sys.stderr)
        return []
    try:
        return mypycify([str(SOURCE)], opt_level="3")
    except BaseException as exc:  # a type error mypyc refuses: never block the install
        print(f"sigops: compiled detector not built ({exc!r}); using the Python source", file=sys.stderr)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
