"""Streaming detection per series: the ensemble's verdicts, with hysteresis and flapping.

`Detection` owns the states of the series this worker has seen. Each metric point goes
through the ensemble (`engine/ensemble.py`) and gets an `Assessment`; hysteresis then
decides what is an anomaly episode: a higher score opens one than keeps it open, and a
quiet period closes it. A series that opens again soon after closing is flapping: its
episode then stays open until a much longer calm, so people hear about it once.

Only news opens an episode. A point opens one only if it is further above (or below)
what was expected than the series has been lately, in the series' own units (records
that fade by half in three weeks; learned once the series has settled, and until then a
point must come near its strongest surprise of late), or if its |z| is three times the
strongest of late (so one wild point does not mute a series for weeks). A spike no
higher than the ones this series shows every few days is not news, however many σ the
model makes of it, nor is a 7σ blip the day after a 40σ incident. Soon after an episode
closed, only a much stronger point opens another (the refractory period: real series
ring after an incident).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from engine.detection.ensemble import Assessment, EnsembleDetector, SeriesModel, score_of
from engine.signal import Signal
from engine.text import duration, fmt, usual_range

Transition = Literal["opened", "closed"] | None


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


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """When an anomaly episode opens, stays open, closes, and counts as flapping."""

    open_score: float = 0.58  # |z| ≈ 4.27
    keep_score: float = 0.3  # |z| ≈ 3.3
    quiet_points: int = 20  # points under `keep_score` before an episode closes
    flap_window_s: float = 3600.0  # reopening within this of closing is flapping
    flap_quiet_factor: int = 6  # a flapping episode needs this many times the quiet period
    # Soon after an episode closed (in the series' own points), only a much stronger point
    # opens another: real series ring after an incident, and each ring is not news.
    refractory_points: float = 600.0
    refractory_score: float = 0.97  # |z| ≈ 7
    # A point opens an episode only if it is further above (or below) expected than the series
    # has been lately: records learned from the `record_after`-th point on, fading by half in
    # `record_half_life_s`; or if its |z| is `record_escape` times the series' recent peak |z|
    # (which fades by `peak_decay` a point), so one wild point cannot mute a series for weeks.
    # Before the records, while the models settle (their misses are no measure of news yet),
    # its |z| must be at least `novelty` times that peak.
    record_after: int = 300
    record_half_life_s: float = 21 * 86400.0
    record_escape: float = 3.0
    novelty: float = 0.8
    peak_decay: float = 0.999
    # Past this |z| all surprises are alike for novelty: the first spike of a flat series
    # (scale near nothing, z of 10⁹) must not silence everything after it for weeks.
    peak_cap: float = 1000.0


@dataclass(slots=True)
class Episode:
    """Where a series stands: calm, or in an anomaly episode since `opened_at`."""

    open: bool = False
    quiet: int = 0
    opened_at: float = 0.0
    closed_at: float = 0.0
    flapping: bool = False
    peak: float = 0.0  # the strongest |z| of late (decaying)
    above: float = -math.inf  # the furthest above expected of late (fading; -inf: none yet)
    below: float = -math.inf  # the furthest below


@dataclass(slots=True)
class SeriesState:
    model: SeriesModel
    episode: Episode
    service: str = ""
    silence_reported: bool = False
    arrived_at: float = 0.0  # wall clock when its last point arrived (silence is judged on arrival)


@dataclass(slots=True, init=False)
class Observation:
    """What detection made of one metric point (not frozen: one is made per point)."""

    signal: Signal
    assessment: Assessment | None
    anomaly: Anomaly | None
    transition: Transition
    flapping: bool
    open: bool

    # Written out, not generated: compiled, a dataclass's generated __init__ runs interpreted.
    def __init__(
        self, signal: Signal, assessment: Assessment | None, anomaly: Anomaly | None,
        transition: Transition = None, flapping: bool = False, open: bool = False,
    ) -> None:  # fmt: skip
        self.signal, self.assessment, self.anomaly = signal, assessment, anomaly
        self.transition, self.flapping, self.open = transition, flapping, open


# format version, open, quiet, opened_at, closed_at, flapping, arrived_at, peak, above, below
_EPISODE = struct.Struct("<B?Hdd?dfdd")
_EPISODE_V4 = struct.Struct("<B?Hdd?df")  # read, for states saved before the records were kept
_EPISODE_V3 = struct.Struct("<B?Hdd?d")  # read, for states saved before the peak was kept
_EPISODE_V2 = struct.Struct("<B?Hdd?")  # read, for states saved before arrival times were kept
_FORMAT = 5
# A series whose last point arrived this much later than its timestamp is being backfilled,
# not reporting live: it cannot be "silent" until it reports live again.
LIVE_LAG_S = 600.0


class Detection:
    """Runs the ensemble over metric signals, holding each series' state."""

    def __init__(self, detector: EnsembleDetector | None = None, policy: Hysteresis | None = None) -> None:
        self.detector = detector or EnsembleDetector()
        self.policy = policy or Hysteresis()
        self._series: dict[str, SeriesState] = {}
        # The series changed since the last save, in order (a set would do, but not in order):
        # a save packs these, not every series the worker holds.
        self._dirty: dict[str, None] = {}

    def known(self, series: str) -> bool:
        return series in self._series

    def last_ts(self, series: str) -> float | None:
        """The time of the last point this series' state has seen (None: it has seen none)."""
        state = self._series.get(series)
        return state.model.last_ts if state is not None and state.model.n else None

    def observe(self, signal: Signal, arrived_at: float | None = None) -> Observation:
        """Feed one metric point through the ensemble and the hysteresis.

        `arrived_at`: when the point reached SigOps (wall clock); offline replay leaves it out
        and time is the points' own.
        """
        value = signal.value
        assert value is not None
        state = self._series.get(signal.series)
        if state is None:
            state = SeriesState(self.detector.new_state(), Episode())
            self._series[signal.series] = state
        self._dirty[signal.series] = None
        if signal.labels or not state.service:  # without labels it is the series' prefix: known
            state.service = signal.service
        state.silence_reported = False
        state.arrived_at = signal.ts if arrived_at is None else arrived_at
        previous = state.model.last_ts
        verdict = self.detector.observe(state.model, signal.ts, value)
        if verdict is None:
            return Observation(signal, None, None)
        return self._judge(signal, state, verdict, signal.ts - previous)

    def _judge(self, signal: Signal, state: SeriesState, verdict: Assessment, elapsed: float) -> Observation:
        policy, episode = self.policy, state.episode
        transition: Transition = None
        strong = verdict.score >= policy.open_score
        magnitude = abs(verdict.z)
        value = signal.value
        assert value is not None
        deviation = value - verdict.expected
        if strong and not episode.open:
            if episode.closed_at:
                since = (signal.ts - episode.closed_at) / max(state.model.gap, 1e-9)
                strong = since >= policy.refractory_points or verdict.score >= policy.refractory_score
            # A gap is news whatever the value after it.
            strong = strong and (self._is_news(episode, magnitude, deviation) or "silence" in verdict.drivers)
        episode.peak = max(episode.peak * policy.peak_decay, min(magnitude, policy.peak_cap))
        if state.model.n > policy.record_after:  # learn the records: fade them, then let this beat them
            if math.isfinite(episode.above):
                decay = 0.5 ** (max(elapsed, 0.0) / policy.record_half_life_s)
                episode.above = max(episode.above * decay, deviation)
                episode.below = max(episode.below * decay, -deviation)
            else:
                episode.above, episode.below = deviation, -deviation
        if strong:
            episode.quiet = 0
            if not episode.open:
                episode.open, episode.opened_at, transition = True, signal.ts, "opened"
                episode.flapping = (
                    bool(episode.closed_at) and signal.ts - episode.closed_at < policy.flap_window_s
                )
        elif episode.open:
            episode.quiet = 0 if verdict.score >= policy.keep_score else episode.quiet + 1
            needed = policy.quiet_points * (policy.flap_quiet_factor if episode.flapping else 1)
            if episode.quiet >= needed:
                episode.open, episode.closed_at, transition = False, signal.ts, "closed"
        lasting = signal.ts - episode.opened_at if episode.open and transition != "opened" else 0.0
        anomaly = _anomaly(signal, verdict, lasting) if strong else None
        return Observation(signal, verdict, anomaly, transition, episode.flapping, episode.open)

    def _is_news(self, episode: Episode, magnitude: float, deviation: float) -> bool:
        """Further from expected than the series has been lately, or far stronger than its
        recent surprises; while it settles, near the strongest of them."""
        policy = self.policy
        if not math.isfinite(episode.above):  # no records yet
            return magnitude >= policy.novelty * episode.peak
        past = deviation > episode.above if deviation > 0 else -deviation > episode.below
        return past or magnitude >= policy.record_escape * episode.peak

    def sweep(self, now: float) -> list[Anomaly]:
        """Series that stopped reporting (each reported once until it reports again)."""
        found = []
        for name, state in self._series.items():
            if state.silence_reported or not state.arrived_at:
                continue
            lag = state.arrived_at - state.model.last_ts
            if lag > max(LIVE_LAG_S, 3 * state.model.gap):
                continue  # back-dated points: not reporting live, so it cannot stop reporting
            # Silence is judged on arrival: how long since a point came, against the usual gap.
            quiet = self.detector.silent_since(state.model, state.model.last_ts + (now - state.arrived_at))
            if quiet:
                state.silence_reported = True
                self._dirty[name] = None
                # The episode opens now; the series' next point (flagged as after a silence)
                # keeps it open, and calm points after that close it.
                state.episode.open, state.episode.opened_at, state.episode.quiet = True, now, 0
                model = state.model
                z = self.detector.silence_z(model, quiet)
                found.append(
                    Anomaly(
                        id=f"silence:{name}:{int(model.last_ts)}",
                        signal_id=f"silence:{name}:{int(model.last_ts)}",
                        ts=now,
                        series=name,
                        service=state.service or name.split(".", 1)[0],
                        value=0.0,
                        expected=1.0,
                        lower=1.0,
                        upper=1.0,
                        score=round(score_of(z), 4),
                        detectors=("silence",),
                        explanation=(
                            f"{name} has not reported for {duration(quiet)} "
                            f"(usually every {duration(model.gap)})"
                        ),
                    )
                )
        return found

    # -- persistence -------------------------------------------------------------

    def restore(self, saved: Mapping[str, bytes]) -> None:
        """Adopt persisted states (from `dirty_states`) for series not seen yet."""
        for series, blob in saved.items():
            if series not in self._series:
                state = self._unpack(blob)
                if state is not None:
                    self._series[series] = state

    def resume(self, series: str, opened_at: float) -> None:
        """The record has an alert firing for `series` that its state does not know of (the
        worker that opened it died before saving): hold the episode open, so the series'
        calm points close the alert as they would have."""
        state = self._series.get(series)
        if state is None:
            state = SeriesState(self.detector.new_state(), Episode())
            self._series[series] = state
        episode = state.episode
        if not episode.open:
            episode.open, episode.opened_at, episode.quiet = True, opened_at, 0
            self._dirty[series] = None

    def skip_to(self, series: str, ts: float) -> None:
        """The series' state will not see its points before `ts` (a state far behind the record
        catches up on the latest points only): the point at `ts` comes a usual gap after the
        last one it saw, not after a silence that never was. Read as a silence, it would open
        an episode the record never had, and the quiet spell and the recent peak it leaves
        would hold back a real incident for hours."""
        state = self._series.get(series)
        if state is not None and state.model.n:
            model = state.model
            model.last_ts = max(model.last_ts, ts - model.gap)
            self._dirty[series] = None

    def series_names(self) -> list[str]:
        return list(self._series)

    def forget(self, names: list[str]) -> None:
        """Drop series this worker no longer owns (their next owner loads their state)."""
        for name in names:
            self._series.pop(name, None)
            self._dirty.pop(name, None)

    def packed(self, names: list[str]) -> dict[str, bytes]:
        """The persisted form of these series' states, dirty or not (others are left as they are)."""
        return {name: self._pack(self._series[name]) for name in names if name in self._series}

    def dirty_states(self) -> dict[str, bytes]:
        """Packed states changed since the last call (and mark them clean)."""
        out = {}
        for name in self._dirty:
            state = self._series.get(name)
            if state is not None:
                out[name] = self._pack(state)
        self._dirty.clear()
        return out

    def _pack(self, state: SeriesState) -> bytes:
        e = state.episode
        quiet = min(e.quiet, 65535)
        episode = _EPISODE.pack(
            _FORMAT, e.open, quiet, e.opened_at, e.closed_at, e.flapping, state.arrived_at, e.peak,
            e.above, e.below,
        )  # fmt: skip
        return episode + self.detector.pack(state.model)

    def _unpack(self, blob: bytes) -> SeriesState | None:
        peak, above, below = 0.0, -math.inf, -math.inf  # saved before these were kept: all is news again
        try:
            if blob[:1] == bytes([2]):  # before arrival times: take the last point's time
                _, is_open, quiet, opened_at, closed_at, flapping = _EPISODE_V2.unpack_from(blob)
                model = self.detector.unpack(blob[_EPISODE_V2.size :])
                arrived_at = model.last_ts
            elif blob[:1] == bytes([3]):
                _, is_open, quiet, opened_at, closed_at, flapping, arrived_at = _EPISODE_V3.unpack_from(blob)
                model = self.detector.unpack(blob[_EPISODE_V3.size :])
            elif blob[:1] == bytes([4]):
                _, is_open, quiet, opened_at, closed_at, flapping, arrived_at, peak = _EPISODE_V4.unpack_from(
                    blob
                )
                model = self.detector.unpack(blob[_EPISODE_V4.size :])
            else:
                version, is_open, quiet, opened_at, closed_at, flapping, arrived_at, peak, above, below = (
                    _EPISODE.unpack_from(blob)
                )
                if version != _FORMAT:
                    return None
                model = self.detector.unpack(blob[_EPISODE.size :])
        except (struct.error, ValueError):
            return None  # state from another version: relearn rather than crash
        episode = Episode(is_open, quiet, opened_at, closed_at, flapping, peak, above, below)
        return SeriesState(model, episode, arrived_at=arrived_at)


def state_bytes(detection: Detection) -> int:
    """Bytes of persisted state per series."""
    return _EPISODE.size + len(detection.detector.pack(SeriesModel()))


def _anomaly(signal: Signal, verdict: Assessment, lasting: float = 0.0) -> Anomaly:
    assert signal.value is not None
    drivers = verdict.drivers or ("level",)
    return Anomaly(
        id=f"{signal.id}:{drivers[0]}",
        signal_id=signal.id,
        ts=signal.ts,
        series=signal.series,
        service=signal.service,
        value=signal.value,
        expected=verdict.expected,
        lower=verdict.lower,
        upper=verdict.upper,
        score=round(verdict.score, 4),
        detectors=drivers,
        explanation=explain(signal.series, signal.value, verdict, lasting),
        labels=dict(signal.labels),
    )


def explain(series: str, value: float, verdict: Assessment, lasting: float = 0.0) -> str:
    """One line a person can read: value vs expected, band, how far off, why, for how long."""
    direction = "above" if verdict.z > 0 else "below"
    why = "+".join(verdict.drivers) or "level"
    band = usual_range(verdict.lower, verdict.upper, value, verdict.expected)
    text = (
        f"{series} {fmt(value)}, expected {fmt(verdict.expected)} ({band}): "
        f"{_sigmas(verdict.z)} {direction} ({why})"
    )
    if lasting >= 60:
        text += f", for {duration(lasting)}"
    return f"{text}; {verdict.note}" if verdict.note else text


def _sigmas(z: float) -> str:
    """How far off, as a person reads it: "4.6σ", and past 1000σ just "over 1000σ" (a series
    that was perfectly flat until now has no scale to measure its first jump by)."""
    return f"{abs(z):.1f}σ" if abs(z) < 1000 else "over 1000σ"
