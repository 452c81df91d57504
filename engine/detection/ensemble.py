"""The detector ensemble: five streaming detectors over one small per-series state.

Computed in one pass per point (the detectors share the baseline, and one pass keeps
the cost near 10 µs a point):

- level: Holt's level + trend with clipped updates, scaled by an exponentially weighted
  mean absolute deviation; a robust z-score. A steady trend is learned, not flagged.
- seasonality: what the level model typically misses at each hour of the day, weekdays
  and weekends apart (48 buckets, interpolated between hour centres). Once the buckets
  have several days of history and fit better than the level alone, the seasonally
  adjusted residual is judged instead: a daily peak or a nightly batch job is expected
  at its hour, and a quiet night that suddenly gets busy still stands out.
- counts: for series of small non-negative integers, the Poisson upper tail replaces
  the z-score (meaningless at low rates).
- level shift: a two-sided CUSUM of the standardised residuals, so a step is found even
  when no single point is extreme; the shift stays news while the level stays away.
- drift: how far the level moved lately (against a slow average), compared with how far
  it usually moves at that hour (learned across days, weekdays and weekends apart). A
  steady trend or a daily ramp is a usual move; a slow climb is not. Judged once the
  hour's buckets have three days of history.
- silence: a series that reports again after a gap far longer than its usual gap
  (live, `Detection.sweep` also finds series that stopped and have not come back).
  "Far longer" is judged against the series' own cadence: a road sensor whose gaps are
  irregular learns how long a gap it shows once in a few hundred, and only a longer one
  is news; after a silence, only a longer silence is.

Each detector is calibrated against the series itself: how far out its points usually
stray (the point detectors), and how strong the shifts and drifts it shows now and then
are (counted once per episode, not per point), so a series that is often surprising
needs a bigger surprise to be news.
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from statistics import NormalDist
from typing import Final
from zoneinfo import ZoneInfo

from engine.text import duration

# Final: compiled, a module-level name that is not is looked up in a dict at each use.
_SIGMA_PER_MAD: Final = math.sqrt(math.pi / 2)  # sigma of a normal = this * mean absolute deviation
_TAIL_P: Final = 0.001
_GAUSSIAN_TAIL_Z: Final = 3.29  # P(|z| > 3.29) = 0.001 for a standard normal
_NORMAL: Final = NormalDist()
_SQRT_2PI: Final = math.sqrt(2.0 * math.pi)
BUCKETS: Final = 48


@dataclass(slots=True)
class SeriesModel:
    """Everything the ensemble knows about one series (packs into `STATE_BYTES`)."""

    n: int = 0
    last_ts: float = 0.0
    gap: float = 0.0  # EW mean of the time between points
    level: float = 0.0
    slope: float = 0.0
    mad: float = 0.0
    cpos: float = 0.0  # CUSUM sums
    cneg: float = 0.0
    alarm: int = 0  # points the CUSUM has been in alarm
    anchor: float = 0.0  # the level before the CUSUM started adding up (what a shift left)
    slow: float = 0.0  # a slow average of the level: level - slow is how far it moved lately
    counts: bool = True  # every value so far a non-negative integer
    l_fit: float = 0.8  # EW mean |level z|
    s_fit: float = 9.0  # EW mean |seasonally adjusted z|: near 0.8 when the seasonal model fits
    tail: float = _GAUSSIAN_TAIL_Z  # the |z| this series' points exceed one time in a thousand
    gap_tail: float = 6.0  # the gap, in usual gaps, this series exceeds about once in 500 gaps
    move_tail: float = _GAUSSIAN_TAIL_Z  # the shift/drift |z| it reaches about once in 1000 points
    moving: bool = False  # the last point's shift/drift |z| was past move_tail (one episode)
    last_value: float = math.nan  # the previous point's value (NaN: not known)
    step: float = 0.0  # the smallest change between two points seen: the values' resolution
    s_mean: array = field(default_factory=lambda: array("f", bytes(4 * BUCKETS)))  # offsets
    s_mad: array = field(default_factory=lambda: array("f", bytes(4 * BUCKETS)))
    s_days: bytearray = field(default_factory=lambda: bytearray(BUCKETS))  # distinct days, capped
    seen_day: int = 0  # the day (UTC, 16 bits) `seen` is for
    seen: int = 0  # bit i: bucket i has had a point that day (counted in s_days)
    m_mean: array = field(default_factory=lambda: array("f", bytes(4 * BUCKETS)))  # usual move, by hour
    m_mad: array = field(default_factory=lambda: array("f", bytes(4 * BUCKETS)))  # its usual spread


@dataclass(slots=True, init=False)
class Assessment:
    """The ensemble's view of one point: score, expectation, and what drove it."""

    score: float  # in [0, 1]
    z: float  # signed surprise, in standard deviations (or equivalent)
    expected: float
    lower: float
    upper: float
    drivers: tuple[str, ...]  # detectors that judged the point abnormal
    warm: bool  # past warm-up (no verdicts before)
    note: str  # extra explanation (silence length, shift direction)

    # Written out, not generated: compiled, a dataclass's generated __init__ runs as
    # interpreted code, a tenth of the ensemble's time per point.
    def __init__(
        self, score: float, z: float, expected: float, lower: float, upper: float,
        drivers: tuple[str, ...], warm: bool, note: str = "",
    ) -> None:  # fmt: skip
        self.score, self.z, self.expected, self.lower, self.upper = score, z, expected, lower, upper
        self.drivers, self.warm, self.note = drivers, warm, note


def score_of(z: float) -> float:
    """Map |z| to [0, 1]: 3σ→0.23, 4σ→0.5, 4.5σ→0.65, 5σ→0.77, 6σ→0.92."""
    return 1.0 / (1.0 + math.exp(-(abs(z) - 4.0) * 1.2))


class LocalHours:
    """Local time of day (fractional hours) and weekend flag, with the UTC offset cached per hour."""

    def __init__(self, zone: tzinfo | str = "UTC") -> None:
        self.zone = ZoneInfo(zone) if isinstance(zone, str) else zone
        self._offsets: dict[int, float] = {}
        self._last_hour, self._last_offset = -1, 0.0  # most points fall in the hour before them

    def position(self, ts: float) -> tuple[float, bool]:
        hour_key = int(ts // 3600)
        if hour_key == self._last_hour:
            offset = self._last_offset
        else:
            known = self._offsets.get(hour_key)
            if known is None:
                delta = datetime.fromtimestamp(hour_key * 3600, self.zone).utcoffset()
                known = delta.total_seconds() if delta else 0.0
                if len(self._offsets) > 10_000:
                    self._offsets.clear()
                self._offsets[hour_key] = known
            offset = known
            self._last_hour, self._last_offset = hour_key, offset
        local = ts + offset
        days = local // 86400
        # 1970-01-01 was a Thursday: (days + 3) % 7 is 0 on Mondays.
        return (local - days * 86400) / 3600.0, (int(days) + 3) % 7 >= 5


@dataclass(slots=True)
class EnsembleDetector:
    """The five detectors with their tuning; `observe` updates a `SeriesModel`."""

    warmup: int = 30
    alpha: float = 0.15  # level smoothing (fast enough to follow daily curves)
    beta: float = 0.01  # trend smoothing
    gamma: float = 0.01  # scale smoothing (slow: a noisy scale is the main source of false alarms)
    season_rate: float = 0.05  # per-bucket smoothing
    season_days: int = 3  # distinct days a bucket needs before it counts
    season_gain: float = 0.85  # the seasonal model is used when its fit beats the level's by this
    clip: float = 3.0  # residuals clipped at this many scales when learning
    band: float = 3.0  # expected band half-width, in scales
    cusum_k: float = 0.5
    cusum_h: float = 10.0
    cusum_patience: int = 120  # points in alarm before a new level is accepted
    shift_keep: float = 3.3  # a shift stays news while the level is this many scales from before
    drift_rate: float = 0.01  # the slow average (a memory of ~100 points)
    drift_floor: float = 0.5  # a move's spread is at least this many point scales
    drift_learn: float = 0.01  # per bucket: the usual move is learned across days, not within an hour
    count_rate_max: float = 30.0  # Poisson below this expected rate
    tail_rate: float = 0.1  # how far one exceedance moves the series' tail estimate, in σ
    tail_margin: float = 0.5  # tails this much past a Gaussian's are still taken at face value
    silence_factor: float = 6.0
    silence_min_s: float = 300.0
    driver_z: float = 4.27  # a detector is named as a driver from this |z| (the open score's)
    rel_floor: float = 0.002
    abs_floor: float = 1e-9
    hours: LocalHours = field(default_factory=LocalHours)
    name: str = "ensemble"

    def new_state(self) -> SeriesModel:
        return SeriesModel()

    def observe(self, m: SeriesModel, ts: float, value: float) -> Assessment | None:
        """Update the model with one point and judge it; None during the first point."""
        n = m.n
        if n == 0:
            m.n, m.level, m.last_ts, m.counts = 1, value, ts, value >= 0 and value == int(value)
            m.last_value = value
            return None
        gap = ts - m.last_ts
        silent_for = silent_after = 0.0
        if gap > 0:
            usual = m.gap
            silent_after = self.silence_after(m)  # judged before this gap teaches the estimate
            if usual > 0:  # learn how long a gap this series shows now and then
                m.gap_tail *= _GAP_TAIL_UP if gap > m.gap_tail * usual else _GAP_TAIL_DOWN
                m.gap_tail = max(m.gap_tail, self.silence_factor)
            if usual > 0 and gap > silent_after:
                if n >= self.warmup and gap > self.silence_min_s:
                    silent_for = gap  # a long gap teaches neither the usual gap nor the models
                # A gap this long is one this series shows: only a longer one is news next time.
                m.gap_tail = max(m.gap_tail, gap / usual)
            else:
                m.gap = gap if usual == 0 else usual + 0.05 * (gap - usual)
            m.last_ts = ts
        if m.counts and (value < 0 or value != int(value)):
            m.counts = False

        # Level: Holt forecast and robust scale.
        forecast = m.level + m.slope
        # The scale is never below the smallest step the series has shown before (a series of
        # zeros and spikes is not 10⁹σ out at its next spike), nor a small share of its level.
        floor = max(max(self.rel_floor * abs(forecast), self.abs_floor), m.step)
        change = abs(value - m.last_value)  # NaN when the last value is not known: no step learned
        if change > 0 and (m.step == 0 or change < m.step):
            m.step = change
        m.last_value = value
        sigma = max(_SIGMA_PER_MAD * m.mad, floor)
        level_only = m.s_fit == 0.0 or m.s_fit >= self.season_gain * m.l_fit  # the anchor has no offset
        if (
            m.alarm
            and level_only
            # Most of the way back (the scale has grown during the shift, so not by it alone).
            and abs(value - m.anchor) <= min(2.0 * sigma, abs(forecast - m.anchor) / 3)
            and abs(forecast - m.anchor) >= self.shift_keep * sigma
        ):
            # Back where it was before the shift: the shift is over. The level followed the
            # shift only as fast as clipping lets it; it snaps back rather than paint the
            # recovery as an anomaly the other way ("96 vs expected 324, 10σ below").
            m.level, m.slope, m.cpos, m.cneg, m.alarm = m.anchor, 0.0, 0.0, 0.0, 0
            m.slow = m.anchor  # the drift detector's memory of the shift goes with it
            forecast = m.anchor
        residual = value - forecast
        z_level = residual / sigma
        warm = n >= self.warmup

        # Seasonality: the offset the level usually misses at this time of day.
        hour, weekend = self.hours.position(ts)
        pos = hour - 0.5  # bucket centres at h:30
        h0 = math.floor(pos)
        w = pos - h0
        base = 24 if weekend else 0
        i0, i1 = base + h0 % 24, base + (h0 + 1) % 24
        # Each bucket value is read once, as a float (compiled, arithmetic on an array item
        # is generic, on a float local native).
        s_days, s_mean, s_mad = m.s_days, m.s_mean, m.s_mad
        s_mean0: float = s_mean[i0]
        s_mean1: float = s_mean[i1]
        s_mad0: float = s_mad[i0]
        s_mad1: float = s_mad[i1]
        days0: int = s_days[i0]
        days1: int = s_days[i1]
        off = (1.0 - w) * s_mean0 + w * s_mean1
        s_sigma = max(_SIGMA_PER_MAD * ((1.0 - w) * s_mad0 + w * s_mad1), floor)
        r_season = residual - off
        z_season = r_season / s_sigma
        bucket_ready = days0 >= self.season_days and days1 >= self.season_days
        m.l_fit += 0.01 * (min(abs(z_level), 20.0) - m.l_fit)
        if bucket_ready:
            m.s_fit += 0.01 * (min(abs(z_season), 20.0) - m.s_fit)
        seasonal = bucket_ready and m.s_fit < self.season_gain * m.l_fit
        z_model = z_season if seasonal else z_level

        # Counts: Poisson tail at low rates instead of a z-score.
        expected = forecast + off if seasonal else forecast
        poisson = m.counts and warm and 0 <= expected < self.count_rate_max
        z_point = _counts_z(value, max(expected, 0.05), sigma) if poisson else z_model
        drivers: list[str] = []
        point_driver = "counts" if poisson else "seasonal" if seasonal else "level"

        # CUSUM on clipped standardised residuals. Once it alarms, the shift stays news
        # while the level stays away from where it was (the anchor, frozen meanwhile),
        # until `cusum_patience` points accept the new level.
        u = max(-4.0, min(4.0, z_model))
        if m.alarm == 0 and m.cpos == 0.0 and m.cneg == 0.0:
            m.anchor = expected
        k = self.cusum_k
        m.cpos = max(0.0, m.cpos + u - k) if warm else 0.0
        m.cneg = max(0.0, m.cneg - u - k) if warm else 0.0
        shift = max(m.cpos, m.cneg)
        away = (expected - m.anchor) / sigma  # how far the level now is from before the shift
        z_shift = 0.0
        if shift > self.cusum_h or (m.alarm and abs(away) >= self.shift_keep):
            m.alarm += 1
            # Equivalent z: the alarm threshold maps just past the open score; the distance
            # from the old level keeps it there for as long as the level stays away.
            excess = max(0.0, (shift - self.cusum_h) / self.cusum_h)
            z_shift = math.copysign(
                max(self.driver_z + 0.3 + 1.5 * excess, abs(away)), away or (m.cpos - m.cneg)
            )
            if m.alarm > self.cusum_patience:  # a lasting new level: accept it
                m.cpos = m.cneg = 0.0
                m.alarm = 0
        else:
            m.alarm = 0

        # Drift: how far the level moved lately, against how far it usually moves at this hour.
        if n == 1:
            m.slow = forecast
        move = forecast - m.slow
        m_mean, m_mad = m.m_mean, m.m_mad
        m_mean0: float = m_mean[i0]
        m_mean1: float = m_mean[i1]
        m_mad0: float = m_mad[i0]
        m_mad1: float = m_mad[i1]
        usual = (1.0 - w) * m_mean0 + w * m_mean1
        spread = max(_SIGMA_PER_MAD * ((1.0 - w) * m_mad0 + w * m_mad1), self.drift_floor * sigma)
        z_drift = (move - usual) / spread if bucket_ready and warm else 0.0
        m.slow += self.drift_rate * (forecast - m.slow)
        if abs(z_drift) < 2.5:  # learn what is usual only from usual moves
            surprise = move - usual
            rate = self.drift_learn * (1.0 - w)  # the two neighbouring hours, unrolled (hot path)
            m_mean[i0] = m_mean0 + rate * surprise
            m_mad[i0] = m_mad0 + rate * (abs(surprise) - m_mad0)
            rate = self.drift_learn * w
            m_mean[i1] = m_mean1 + rate * surprise
            m_mad[i1] = m_mad1 + rate * (abs(surprise) - m_mad1)

        # Learn, clipping what an outlier can teach once warm.
        limit = self.clip * sigma
        if warm:
            step = limit if residual > limit else -limit if residual < -limit else residual
            m.level = forecast + self.alpha * step
            m.slope += self.beta * self.alpha * step  # Holt's trend, in error-correction form
            m.mad += self.gamma * (min(abs(residual), limit) - m.mad)
        else:
            m.level = forecast + max(self.alpha, 1.0 / (n + 1)) * residual
            m.mad += max(self.gamma, 1.0 / (n + 1)) * (abs(residual) - m.mad)
        day = int(ts // 86400) & 0xFFFF
        s_limit = self.clip * s_sigma
        r_learn = max(-s_limit, min(s_limit, r_season)) if bucket_ready else r_season
        if m.seen_day != day:  # a new day: no bucket has had a point on it yet
            m.seen_day, m.seen = day, 0
        bit = 1 << i0
        if not m.seen & bit:
            m.seen |= bit
            if days0 < 255:
                s_days[i0] = days0 + 1
        bit = 1 << i1
        if not m.seen & bit:
            m.seen |= bit
            if days1 < 255:
                s_days[i1] = days1 + 1
        rate = self.season_rate * (1.0 - w)
        s_mean[i0] = s_mean0 + rate * r_learn
        s_mad[i0] = s_mad0 + rate * (abs(r_learn) - s_mad0)
        rate = self.season_rate * w
        s_mean[i1] = s_mean1 + rate * r_learn
        s_mad[i1] = s_mad1 + rate * (abs(r_learn) - s_mad1)
        m.n = n + 1
        if not warm:
            return None

        # Calibrate: judge the point against how often this series' points are that far out.
        # A Gaussian series exceeds 3.29σ one time in a thousand; one with heavy tails
        # (most real ones) exceeds a larger |z| as often, and its points count for less.
        raw = min(abs(z_point), 20.0)
        m.tail += self.tail_rate * ((1.0 if raw > m.tail else 0.0) - _TAIL_P)
        m.tail = max(m.tail, _GAUSSIAN_TAIL_Z)
        calibration = min(1.0, (_GAUSSIAN_TAIL_Z + self.tail_margin) / m.tail)
        raw_z, z_point = z_point, z_point * calibration
        # Shifts and drifts last many points: their tail counts each episode once, so one
        # long shift does not teach the series that shifts are common.
        raw = min(max(abs(z_shift), abs(z_drift)), 20.0)
        moving = raw > m.move_tail
        m.move_tail += self.tail_rate * ((1.0 if moving and not m.moving else 0.0) - _TAIL_P)
        m.move_tail = max(m.move_tail, _GAUSSIAN_TAIL_Z)
        m.moving = moving
        move_calibration = min(1.0, (_GAUSSIAN_TAIL_Z + self.tail_margin) / m.move_tail)
        z_shift *= move_calibration
        z_drift *= move_calibration

        # Combine: the strongest signal wins; each detector that fired is named.
        z = z_point
        if abs(z_point) >= self.driver_z:
            drivers.append(point_driver)
        if z_shift:
            drivers.append("shift")
            if abs(z_shift) > abs(z):
                z = z_shift
                expected = m.anchor  # a shift is news relative to where the level was
        if abs(z_drift) >= self.driver_z:
            drivers.append("drift")
            if abs(z_drift) > abs(z):
                z = z_drift
                expected = m.slow + usual
        note = ""
        if calibration < 0.9 and self.driver_z <= abs(z) < 1000 and z == z_point:
            note = f"this series often strays far: {abs(raw_z):.1f}σ counts as {abs(z):.1f}σ"
        elif move_calibration < 0.9 and self.driver_z <= abs(z) < 1000 and z != z_point:
            kind = "shifts" if z == z_shift else "drifts"
            note = f"this series often {kind}: {abs(z) / move_calibration:.1f}σ counts as {abs(z):.1f}σ"
        if silent_for:
            drivers.append("silence")
            z_silence = _silence_z(silent_for, silent_after)  # against the gaps known before this one
            if z_silence > abs(z):
                z = z_silence
            note = f"silent for {duration(silent_for)} (usually every {duration(m.gap)})"
        band = self.band * (s_sigma if seasonal else sigma)
        lower, upper = expected - band, expected + band
        return Assessment(score_of(z), z, expected, lower, upper, tuple(drivers), True, note)

    def silent_since(self, m: SeriesModel, now: float) -> float:
        """Seconds the series has been silent beyond its usual gaps (0 if not silent)."""
        if m.n < self.warmup or m.gap <= 0:
            return 0.0
        quiet = now - m.last_ts
        if quiet > self.silence_after(m) and quiet > self.silence_min_s:
            return quiet
        return 0.0

    def silence_after(self, m: SeriesModel) -> float:
        """Seconds without a point after which this series counts as silent."""
        return max(self.silence_factor, m.gap_tail) * m.gap

    def silence_z(self, m: SeriesModel, quiet: float) -> float:
        """The equivalent |z| of a silence: past the open score, higher the longer it lasts."""
        return _silence_z(quiet, self.silence_after(m))

    # -- persistence -------------------------------------------------------------

    def pack(self, m: SeriesModel) -> bytes:
        head = _HEAD.pack(
            min(m.n, 2**32 - 1), m.last_ts, m.gap, m.level, m.slope, m.mad,
            m.cpos, m.cneg, min(m.alarm, 65535), m.counts, m.l_fit, m.s_fit, m.anchor, m.slow,
        )  # fmt: skip
        tail = (
            m.s_mean.tobytes() + m.s_mad.tobytes() + bytes(m.s_days) + m.m_mean.tobytes() + m.m_mad.tobytes()
        )  # fmt: skip
        cadence = _CADENCE.pack(m.gap_tail, m.move_tail, m.moving)
        resolution = _RESOLUTION.pack(m.last_value, m.step)
        return head + tail + _TAIL.pack(m.tail) + cadence + resolution + _SEEN.pack(m.seen_day, m.seen)

    def unpack(self, data: bytes) -> SeriesModel:
        at = _HEAD.size
        if len(data) in _LEGACY_SIZES:  # kept each bucket's last day (2 bytes a bucket): drop them
            data = data[: at + 9 * BUCKETS] + data[at + 11 * BUCKETS :]
        elif len(data) != STATE_BYTES:
            raise struct.error(f"expected {STATE_BYTES} bytes of state, got {len(data)}")
        # State saved by earlier versions starts the estimates it lacks from a Gaussian's
        # (and the values' step from nothing known).
        tail, gap_tail, move_tail, moving = _GAUSSIAN_TAIL_Z, self.silence_factor, _GAUSSIAN_TAIL_Z, False
        last_value, step = math.nan, 0.0
        if len(data) >= _STATE_BYTES_BEFORE_CADENCE:
            tail = _TAIL.unpack_from(data, _STATE_BYTES_BEFORE_TAIL)[0]
        if len(data) >= _STATE_BYTES_BEFORE_RESOLUTION:
            gap_tail, move_tail, moving = _CADENCE.unpack_from(data, _STATE_BYTES_BEFORE_CADENCE)
        if len(data) >= _STATE_BYTES_BEFORE_SEEN:
            last_value, step = _RESOLUTION.unpack_from(data, _STATE_BYTES_BEFORE_RESOLUTION)
        seen_day, seen = (
            _SEEN.unpack_from(data, _STATE_BYTES_BEFORE_SEEN) if len(data) == STATE_BYTES else (0, 0)
        )
        head = _HEAD.unpack_from(data)
        s_mean, s_mad = array("f"), array("f")
        s_mean.frombytes(data[at : at + 4 * BUCKETS])
        s_mad.frombytes(data[at + 4 * BUCKETS : at + 8 * BUCKETS])
        s_days = bytearray(data[at + 8 * BUCKETS : at + 9 * BUCKETS])
        m_mean, m_mad = array("f"), array("f")
        m_mean.frombytes(data[at + 9 * BUCKETS : at + 13 * BUCKETS])
        m_mad.frombytes(data[at + 13 * BUCKETS : at + 17 * BUCKETS])
        n, last_ts, gap, level, slope, mad, cpos, cneg, alarm, counts, l_fit, s_fit, anchor, slow = head
        return SeriesModel(
            n, last_ts, gap, level, slope, mad, cpos, cneg, alarm, anchor, slow, counts, l_fit, s_fit, tail,
            gap_tail, move_tail, moving, last_value, step, s_mean, s_mad, s_days, seen_day, seen,
            m_mean, m_mad,
        )  # fmt: skip


_HEAD: Final = struct.Struct("<Iddddd ddH?dddd")
_TAIL: Final = struct.Struct("<f")
_CADENCE: Final = struct.Struct("<ff?")  # gap_tail, move_tail, moving
_RESOLUTION: Final = struct.Struct("<df")  # last_value, step
_SEEN: Final = struct.Struct("<HQ")  # seen_day, seen
# Each layout is the one before with a part added at the end.
_STATE_BYTES_BEFORE_TAIL: Final = _HEAD.size + 17 * BUCKETS
_STATE_BYTES_BEFORE_CADENCE: Final = _STATE_BYTES_BEFORE_TAIL + _TAIL.size
_STATE_BYTES_BEFORE_RESOLUTION: Final = _STATE_BYTES_BEFORE_CADENCE + _CADENCE.size
_STATE_BYTES_BEFORE_SEEN: Final = _STATE_BYTES_BEFORE_RESOLUTION + _RESOLUTION.size
STATE_BYTES: Final = _STATE_BYTES_BEFORE_SEEN + _SEEN.size
# Layouts saved by earlier versions: each bucket's last day (2 bytes) after `s_days` instead of
# the seen-today mask, and the later parts missing in the earliest.
_LEGACY_SIZES: Final = tuple(
    size + 2 * BUCKETS
    for size in (
        _STATE_BYTES_BEFORE_SEEN,
        _STATE_BYTES_BEFORE_RESOLUTION,
        _STATE_BYTES_BEFORE_CADENCE,
        _STATE_BYTES_BEFORE_TAIL,
    )
)
_GAP_TAIL_UP: Final = 2**0.5  # a gap past the estimate moves it up by this factor ...
_GAP_TAIL_DOWN: Final = 2**-0.001  # ... and any other gap down by this: about one gap in 500 exceeds it


def _silence_z(quiet: float, silent_after: float) -> float:
    """Past the open score once silent, higher the longer the silence lasts (capped at 10)."""
    ratio = quiet / max(silent_after, 1e-9)
    return min(10.0, 4.0 + math.log2(ratio + 1) * 2)


def _counts_z(value: float, rate: float, sigma: float) -> float:
    """The Poisson tail, widened when the counts vary more than a Poisson's would.

    Real counts are over-dispersed (tweets per 5 min with median 14 and IQR 13): their
    learned scale is wider than √rate. Quasi-Poisson: with dispersion φ = (σ/√rate)² > 1,
    value/φ is judged against Poisson(rate/φ).
    """
    dispersion = (sigma * sigma) / rate if rate > 0 else 1.0
    if dispersion <= 1.0:
        return _poisson_z(value, rate)
    return _poisson_z(value / dispersion, rate / dispersion)


def _poisson_z(value: float, rate: float) -> float:
    """The z-score equivalent of seeing `value` or more when `rate` is expected."""
    if value <= rate + 2.0 * math.sqrt(rate) + 1.0:
        return 0.0  # not in the upper tail: skip the arithmetic
    k = int(value)
    # P(X >= k) = 1 - sum_{i<k} e^-rate rate^i / i!, summed in log space from the mode down.
    log_p = k * math.log(rate) - rate - math.lgamma(k + 1)
    term, total = 1.0, 1.0
    for i in range(k + 1, k + 200):
        term *= rate / i
        total += term
        if term < 1e-12 * total:
            break
    return _normal_z(log_p + math.log(total))


def _normal_z(log_tail: float) -> float:
    """The z a standard normal exceeds with probability exp(log_tail), however small: 550
    counts where 10 are expected score above 67, not alike at a cap."""
    if log_tail > -700:
        tail = math.exp(log_tail)
        return 0.0 if tail >= 0.5 else -_NORMAL.inv_cdf(tail)  # not inv_cdf(1 - tail): rounds to 1.0
    # Past what a float holds: P(Z > z) ~ exp(-z²/2) / (z √(2π)), solved by fixed-point steps.
    depth = -log_tail
    z = math.sqrt(2.0 * depth)
    for _ in range(3):
        z = math.sqrt(2.0 * (depth - math.log(z * _SQRT_2PI)))
    return z
