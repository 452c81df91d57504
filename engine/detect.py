"""Streaming anomaly detection, per series, O(1) work and memory per point.

A `Detector` keeps a small, packable state per series and turns each point into a
`Verdict`. `Detection` owns the states of the series this process has seen, runs the
configured detectors on metric signals and turns verdicts into `Anomaly` records.
More detectors slot in by implementing `Detector` and joining the list given to
`Detection`; their verdicts are combined by taking the strongest.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.signal import Signal

# Normal-distribution constant: sigma = this * mean absolute deviation.
_MEAN_ABS_DEV_TO_SIGMA = math.sqrt(math.pi / 2)


@dataclass(slots=True)
class Verdict:
    """What one detector thinks of one point (not frozen: one is made per point)."""

    detector: str
    score: float  # in [0, 1]
    z: float  # signed deviation in units of the scale
    expected: float
    lower: float
    upper: float
    anomalous: bool


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A point judged abnormal, with what was expected and why."""

    id: str
    signal_id: str
    ts: float
    series: str
    service: str
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    detectors: tuple[str, ...]
    explanation: str
    labels: Mapping[str, str] = field(default_factory=dict)


class Detector(Protocol):
    """One detection method; its per-series state must pack into a few bytes."""

    name: str

    def new_state(self) -> Any:
        """A fresh state for a series never seen before."""
        ...

    def observe(self, state: Any, ts: float, value: float) -> Verdict | None:
        """Update the state with one point; None while warming up."""
        ...

    def pack(self, state: Any) -> bytes:
        """The state as bytes, to persist."""
        ...

    def unpack(self, data: bytes) -> Any:
        """A state from `pack`'s bytes."""
        ...


@dataclass(slots=True)
class RobustZState:
    """EWMA baseline and EW mean absolute residual of one series."""

    n: int = 0
    mean: float = 0.0
    mad: float = 0.0


def anomaly_score(z: float, midpoint: float = 4.0, slope: float = 1.2) -> float:
    """Map |z| to [0, 1]: 3σ is 0.23, 4σ is 0.5, 5σ is 0.77, 6σ is 0.92."""
    return 1.0 / (1.0 + math.exp(-(abs(z) - midpoint) * slope))


@dataclass(slots=True)
class RobustZDetector:
    """Robust z-score of each point against an EWMA baseline scaled by the EW MAD.

    Residuals are clipped at `clip` scales before they update the baseline, so an
    outlier barely moves what "normal" is, while a lasting level change is absorbed
    within a few dozen points.
    """

    alpha: float = 0.05  # baseline smoothing
    beta: float = 0.05  # scale smoothing
    warmup: int = 30  # points before any verdict
    threshold: float = 5.0  # |z| at which a point is anomalous
    band: float = 3.0  # expected band half-width, in scales
    clip: float = 3.0
    rel_floor: float = 0.005  # scale floor relative to the baseline (flat series)
    abs_floor: float = 1e-9
    name: str = "robust_z"
    _packer: struct.Struct = field(default_factory=lambda: struct.Struct("<Idd"), repr=False)

    def new_state(self) -> RobustZState:
        return RobustZState()

    def observe(self, state: RobustZState, ts: float, value: float) -> Verdict | None:
        n, mean = state.n, state.mean
        if n == 0:
            state.n, state.mean, state.mad = 1, value, 0.0
            return None
        sigma = _MEAN_ABS_DEV_TO_SIGMA * state.mad
        floor = self.rel_floor * abs(mean)
        if sigma < floor:
            sigma = floor
        if sigma < self.abs_floor:
            sigma = self.abs_floor
        residual = value - mean
        z = residual / sigma
        if n < self.warmup:
            # Early on learn fast (plain averages); no verdicts yet.
            rate = max(self.alpha, 1.0 / (n + 1))
            state.mean = mean + rate * residual
            state.mad += max(self.beta, 1.0 / (n + 1)) * (abs(residual) - state.mad)
            state.n = n + 1
            return None
        # Once warm, clip what an outlier can teach the baseline and the scale.
        limit = self.clip * sigma
        step = limit if residual > limit else -limit if residual < -limit else residual
        state.mean = mean + self.alpha * step
        state.mad += self.beta * (min(abs(residual), limit) - state.mad)
        state.n = n + 1
        band = self.band * sigma
        return Verdict(
            self.name, anomaly_score(z), z, mean, mean - band, mean + band, abs(z) >= self.threshold
        )

    def pack(self, state: RobustZState) -> bytes:
        return self._packer.pack(min(state.n, 2**32 - 1), state.mean, state.mad)

    def unpack(self, data: bytes) -> RobustZState:
        n, mean, mad = self._packer.unpack(data)
        return RobustZState(n, mean, mad)


@dataclass(slots=True)
class SeriesState:
    """All detectors' states of one series, plus how long it has been calm."""

    states: list[Any]
    calm: int = 0  # consecutive non-anomalous points since the last anomaly
    dirty: bool = True


@dataclass(slots=True)
class Observation:
    """What detection made of one metric signal (not frozen: one is made per point)."""

    signal: Signal
    anomaly: Anomaly | None
    calm: int


_HEADER = struct.Struct("<BI")  # format version, calm


class Detection:
    """Runs the detectors over metric signals, holding each series' state."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        if not detectors:
            raise ValueError("detection needs at least one detector")
        self.detectors = list(detectors)
        self._series: dict[str, SeriesState] = {}

    def known(self, series: str) -> bool:
        return series in self._series

    def restore(self, saved: Mapping[str, bytes]) -> None:
        """Adopt persisted states (from `dirty_states`) for series not seen yet."""
        for series, blob in saved.items():
            if series not in self._series:
                state = self._unpack(blob)
                if state is not None:
                    self._series[series] = state

    def observe(self, signal: Signal) -> Observation:
        """Feed one metric point through every detector."""
        value = signal.value
        assert value is not None
        series = self._series.get(signal.series)
        if series is None:
            series = SeriesState([d.new_state() for d in self.detectors])
            self._series[signal.series] = series
        series.dirty = True
        fired: list[Verdict] = []
        for detector, state in zip(self.detectors, series.states, strict=True):
            verdict = detector.observe(state, signal.ts, value)
            if verdict is not None and verdict.anomalous:
                fired.append(verdict)
        if not fired:
            series.calm += 1
            return Observation(signal, None, series.calm)
        series.calm = 0
        return Observation(signal, _anomaly(signal, fired), 0)

    def dirty_states(self) -> dict[str, bytes]:
        """Packed states changed since the last call (and mark them clean)."""
        out = {}
        for name, series in self._series.items():
            if series.dirty:
                out[name] = self._pack(series)
                series.dirty = False
        return out

    def _pack(self, series: SeriesState) -> bytes:
        parts = [d.pack(s) for d, s in zip(self.detectors, series.states, strict=True)]
        return _HEADER.pack(1, min(series.calm, 2**32 - 1)) + b"".join(parts)

    def _unpack(self, blob: bytes) -> SeriesState | None:
        try:
            version, calm = _HEADER.unpack_from(blob)
            if version != 1:
                return None
            offset, states = _HEADER.size, []
            for detector in self.detectors:
                size = len(detector.pack(detector.new_state()))
                states.append(detector.unpack(blob[offset : offset + size]))
                offset += size
        except struct.error:
            return None  # a state from another detector set: relearn rather than crash
        return SeriesState(states, calm, dirty=False)


def _anomaly(signal: Signal, fired: Iterable[Verdict]) -> Anomaly:
    strongest = max(fired, key=lambda v: v.score)
    names = tuple(sorted({v.detector for v in fired}))
    assert signal.value is not None
    return Anomaly(
        id=f"{signal.id}:{strongest.detector}",
        signal_id=signal.id,
        ts=signal.ts,
        series=signal.series,
        service=signal.service,
        value=signal.value,
        expected=strongest.expected,
        lower=strongest.lower,
        upper=strongest.upper,
        score=round(strongest.score, 4),
        detectors=names,
        explanation=explain(signal.series, signal.value, strongest),
        labels=dict(signal.labels),
    )


def explain(series: str, value: float, verdict: Verdict) -> str:
    """One line a person can read: value vs expected, band and how far off."""
    half_band = (verdict.upper - verdict.lower) / 2
    direction = "above" if verdict.z > 0 else "below"
    return (
        f"{series} {fmt(value)} vs expected {fmt(verdict.expected)}±{fmt(half_band)}, "
        f"{abs(verdict.z):.1f}σ {direction} ({verdict.detector})"
    )


def fmt(number: float) -> str:
    """A number in at most 3-4 significant digits, without noise."""
    if number == 0 or not math.isfinite(number):
        return str(number)
    magnitude = abs(number)
    if magnitude >= 1e6:
        return f"{number / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{number / 1e3:.3g}k"
    if magnitude >= 100:
        return f"{number:.0f}"
    return f"{number:.3g}"
