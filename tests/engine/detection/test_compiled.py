"""The compiled modules (mypyc, built by setup.py) are their sources, only faster."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import engine
import engine.detection
import engine.signal_fast
from engine import compiled_is_current
from engine.demo import poisson_sample
from engine.detection import detect, ensemble
from engine.signal import Signal

SOURCE = Path(engine.detection.__file__).with_name("ensemble.py")
EPISODES = SOURCE.with_name("detect.py")


def _source_module(source: Path = SOURCE) -> ModuleType:
    """A module of engine/detection loaded from its .py file, whatever import picked."""
    spec = importlib.util.spec_from_file_location(f"{source.stem}_from_source", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _corpus(seed: int) -> dict[str, list[tuple[float, float]]]:
    """Series that reach every detector: seasonal, counts, spikes, a shift, gaps, zeros."""
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    series: dict[str, list[tuple[float, float]]] = {}
    daily = []
    for i in range(6 * 1440 // 5):
        hour = (i * 5 / 60) % 24
        value = 100 + 40 * math.sin(2 * math.pi * hour / 24) + rng.gauss(0, 3)
        daily.append((t0 + i * 300, value + (80 if i % 997 == 0 else 0)))
    series["daily"] = daily
    series["counts"] = [(t0 + i * 60, float(poisson_sample(rng, 4 if i < 3000 else 12))) for i in range(4000)]
    series["shift"] = [(t0 + i * 60, rng.gauss(50 if i < 2000 else 80, 2)) for i in range(3000)]
    gaps, ts = [], t0
    for i in range(2000):
        ts += rng.choice((60, 60, 60, 600)) + (7200 if i == 1500 else 0)
        gaps.append((ts, rng.gauss(10, 1)))
    series["gaps"] = gaps
    series["spiky"] = [(t0 + i * 60, 20.0 if i % 100 == 0 else 0.0) for i in range(3000)]
    series["heavy"] = [(t0 + i * 60, rng.paretovariate(1.5)) for i in range(3000)]
    return series


def _compiled_or_skip(in_use: bool, what: str) -> None:
    """Skip a test of compiled code (`what`) where it is not installed (no C compiler at install
    time?), and fail instead where SIGOPS_EXPECT_COMPILED says it must be (CI)."""
    if not in_use:
        if os.environ.get("SIGOPS_EXPECT_COMPILED"):
            pytest.fail(f"SIGOPS_EXPECT_COMPILED is set, but {what}: not compiled here")
        pytest.skip(f"{what}: not compiled here (no C compiler at install time?)")


def _fields(a: ensemble.Assessment) -> tuple[object, ...]:
    return (a.score, a.z, a.expected, a.lower, a.upper, a.drivers, a.warm, a.note)


def test_the_compiled_detector_gives_exactly_what_the_source_gives() -> None:
    _compiled_or_skip(engine.detection.COMPILED, "the detector")
    assert ensemble.__file__ and not ensemble.__file__.endswith(".py")
    source = _source_module()
    compiled_detector, source_detector = ensemble.EnsembleDetector(), source.EnsembleDetector()
    points = 0
    for name, data in _corpus(7).items():
        a, b = compiled_detector.new_state(), source_detector.new_state()
        for ts, value in data:
            got, want = compiled_detector.observe(a, ts, value), source_detector.observe(b, ts, value)
            points += 1
            if want is None:
                assert got is None, name
                continue
            assert got is not None, name
            assert _fields(got) == _fields(want), f"{name} at {ts}"
        # Saved state is the same bytes, and either side loads the other's.
        assert compiled_detector.pack(a) == source_detector.pack(b), name
        saved = source_detector.pack(b)
        assert source_detector.pack(compiled_detector.unpack(saved)) == saved
    assert points > 15_000


def _observed(o: detect.Observation) -> tuple[object, ...]:
    verdict = None if o.assessment is None else _fields(o.assessment)
    anomaly = o.anomaly
    found = None if anomaly is None else (anomaly.id, anomaly.score, anomaly.detectors, anomaly.explanation)
    return (o.signal.id, verdict, found, o.transition, o.flapping, o.open)


def test_the_compiled_episodes_give_exactly_what_the_source_gives() -> None:
    _compiled_or_skip(engine.detection.COMPILED_EPISODES, "the episodes")
    assert detect.__file__ and not detect.__file__.endswith(".py")
    source = _source_module(EPISODES)
    compiled, interpreted = detect.Detection(), source.Detection()
    points = opened = 0
    for name, data in _corpus(11).items():
        for i, (ts, value) in enumerate(data):
            signal = Signal(f"{name}-{i}", ts, "test", "metric", f"svc.{name}", value, {}, None, "info")
            got, want = compiled.observe(signal, ts), interpreted.observe(signal, ts)
            assert _observed(got) == _observed(want), f"{name} at {ts}"
            points, opened = points + 1, opened + (got.transition == "opened")
        end = data[-1][0] + 86_400
        assert [a.explanation for a in compiled.sweep(end)] == [a.explanation for a in interpreted.sweep(end)]
    assert points > 15_000 and opened > 3  # episodes opened and closed, not just quiet points
    # The saved states are the same bytes, and either side loads the other's.
    assert compiled.dirty_states() == interpreted.dirty_states()
    names = compiled.series_names()
    again = source.Detection()
    again.restore(compiled.packed(names))
    assert again.packed(names) == interpreted.packed(names)


def test_the_compiled_replay_writes_exactly_what_the_source_writes() -> None:
    replay_module = sys.modules["engine.detection.replay"]
    _compiled_or_skip(engine.detection.COMPILED_REPLAY, "the replay")
    assert not replay_module.__file__.endswith(".py")
    source = _source_module(EPISODES.with_name("replay.py"))
    lines = ["timestamp,value\n"]
    for name, data in _corpus(13).items():
        lines += [f"{ts:.0f},{value!r}\n" for ts, value in data if name != "gaps"]
    lines.insert(500, '"2023-11-14T22:13:20Z",1.5\n')  # a quoted timestamp: written by the csv module
    written = []
    for module in (replay_module, source):
        out = io.StringIO()
        count = module.write_csv(module.replay(module.read_points(lines), detect.Detection()), out)
        written.append((count, out.getvalue()))
    assert written[0] == written[1]
    assert written[0][0] > 10_000 and ",1," in written[0][1]  # alerts among the rows


def test_a_compiled_detector_built_from_another_source_is_not_used(tmp_path: Path) -> None:
    source, stamp = tmp_path / "ensemble.py", tmp_path / "ensemble.build"
    source.write_text("X = 1\n")
    assert not compiled_is_current(source, stamp)  # no stamp: not known to match
    stamp.write_text(hashlib.sha256(source.read_bytes()).hexdigest() + "\n")
    assert compiled_is_current(source, stamp)
    source.write_text("X = 2\n")  # edited since the build
    assert not compiled_is_current(source, stamp)
    assert compiled_is_current(tmp_path / "absent.py", stamp)  # installed without sources


def test_the_compiled_modules_in_use_were_built_from_todays_sources() -> None:
    if engine.detection.COMPILED:
        assert compiled_is_current(SOURCE, SOURCE.with_name("ensemble.build"))
    if engine.detection.COMPILED_EPISODES:
        assert engine.detection.COMPILED  # it reads the ensemble's objects as native ones
        assert compiled_is_current(EPISODES, EPISODES.with_suffix(".build"))
    if engine.detection.COMPILED_REPLAY:
        assert engine.detection.COMPILED_EPISODES and engine.COMPILED_VALIDATION
        replay = EPISODES.with_name("replay.py")
        assert compiled_is_current(replay, replay.with_suffix(".build"))
    fast = Path(engine.__file__).with_name("signal_fast.py")
    if engine.COMPILED_VALIDATION:
        assert compiled_is_current(fast, fast.with_suffix(".build"))
        assert not engine.signal_fast.__file__.endswith(".py")
    elif os.environ.get("SIGOPS_EXPECT_COMPILED"):
        pytest.fail("SIGOPS_EXPECT_COMPILED is set but the compiled validation path is not in use")
    # Whichever is in use, the fast path and the careful one agree: tests/engine/test_signal.py.


def test_sigops_pure_python_runs_the_sources_even_when_compiled_ones_are_there() -> None:
    code = (
        "import engine, engine.detection as d, engine.detection.ensemble as e, engine.signal_fast as f;"
        "import sys; r = sys.modules['engine.detection.replay'];"
        "print(engine.COMPILED_VALIDATION, d.COMPILED, d.COMPILED_EPISODES, d.COMPILED_REPLAY,"
        " e.__file__.endswith('.py'), d.detect.__file__.endswith('.py'), r.__file__.endswith('.py'),"
        " f.__file__.endswith('.py'))"
    )
    env = {**os.environ, "SIGOPS_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 4 + ["True"] * 4
