"""The detector ensemble and hysteresis, on crafted series (table-driven per detector)."""

from __future__ import annotations

import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.demo import poisson_sample
from engine.detection.detect import Detection, Hysteresis, state_bytes
from engine.detection.ensemble import STATE_BYTES, EnsembleDetector, LocalHours, score_of
from engine.signal import Signal

T0 = 1_795_000_000.0 - (1_795_000_000.0 % 86400)  # a midnight, UTC
STEP = 60.0


def points(values: list[float | None], name: str = "pay.latency") -> list[Signal | None]:
    return [
        Signal(f"{name}-{i}", T0 + STEP * i, "t", "metric", name, v, {"service": "pay"}, None, "info")
        if v is not None
        else None
        for i, v in enumerate(values)
    ]


def noise(n: int, seed: int = 1, mean: float = 200.0, sd: float = 10.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def poisson(n: int, rate: float, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [float(poisson_sample(rng, rate)) for _ in range(n)]


def daily(days: int, seed: int = 4) -> list[float]:
    """A strong daily cycle (amplitude 16 sigma) with noise, one point a minute."""
    rng = random.Random(seed)
    return [200 + 80 * math.sin(2 * math.pi * i / 1440) + rng.gauss(0, 5) for i in range(1440 * days)]


def alarms(values: list[float | None], detection: Detection | None = None) -> list[int]:
    """Indexes where an anomaly episode opened (what would page someone)."""
    detection = detection or Detection()
    out = []
    for i, signal in enumerate(points(values)):
        if signal is None:
            if detection.sweep(T0 + STEP * i):
                out.append(i)
        elif detection.observe(signal).transition == "opened":
            out.append(i)
    return out


def with_at(values: list[float], index: int, value: float) -> list[float]:
    return [*values[:index], value, *values[index + 1 :]]


@pytest.mark.parametrize(
    ("case", "values", "expected"),
    [
        ("level: 6σ spike", with_at(noise(300), 200, 260.0), [200]),
        ("level: 6σ dip", with_at(noise(300), 150, 140.0), [150]),
        ("level: clean noise, 3 days", noise(4320, seed=5), []),
        ("level: warm-up is silent", [1.0, 100.0, 1.0, 500.0, *noise(20, mean=1, sd=0.1)], []),
        ("level: a steady trend is learned", [v + 0.2 * i for i, v in enumerate(noise(3000, seed=7))], []),
        (
            "shift: 4σ step, no point past 4.27σ",
            [*noise(200, seed=1), *(v + 40 for v in noise(100, seed=51))],
            [203],
        ),
        ("counts: quiet Poisson(2)", poisson(3000, 2.0), []),
        ("counts: 15 when 2 is usual", with_at(poisson(400, 2.0), 300, 15.0), [300]),
        ("seasonal: 4 days of a daily cycle", daily(4), []),
    ],
)
def test_detector_table(case: str, values: list[float], expected: list[int]) -> None:
    assert alarms(list(values)) == expected, case


def test_the_daily_peak_is_expected_and_a_busy_trough_is_not() -> None:
    values = daily(6)
    quiet = [a for a in alarms(values) if a < 1440 * 5]
    assert len(quiet) <= 1  # five days of a 16σ daily swing: peaks and troughs are not news
    trough = 1440 * 5 + 1080  # 18:00 on day 6, the bottom of the cycle
    for i in range(trough - 30, trough + 30):
        values[i] += 60.0  # a busy hour when it is usually quiet
    assert any(trough - 30 <= a <= trough - 28 for a in alarms(values))


def test_silence_is_found_by_the_sweep_and_after_the_gap() -> None:
    values: list[float | None] = [*noise(200), *([None] * 60), *noise(50, seed=2)]
    assert alarms(values) == [206]  # 6 usual gaps after the last point
    detection = Detection()
    for signal in points(noise(200)):
        assert signal is not None
        detection.observe(signal)
    found = detection.sweep(T0 + STEP * 260)
    assert [a.series for a in found] == ["pay.latency"]
    assert "has not reported for 61 min (usually every 60s)" in found[0].explanation
    assert detection.sweep(T0 + STEP * 300) == []  # reported once


def test_a_series_with_irregular_gaps_is_silent_only_past_its_own_long_gaps() -> None:
    """A road sensor: one reading every 5 min, but one gap in ten lasts 30-60 min."""
    rng = random.Random(5)
    detection, ts, silences = Detection(), T0, []
    for i in range(3000):
        ts += 300.0 * (rng.choice((6, 8, 10, 12)) if rng.random() < 0.1 else 1)
        obs = detection.observe(
            Signal(f"road-{i}", ts, "t", "metric", "road.speed", rng.gauss(60, 3), {}, None, "info")
        )
        if obs.transition == "opened" and obs.anomaly and "silence" in obs.anomaly.detectors:
            silences.append(i)
    assert len(silences) <= 3  # 28 times when 6x its usual gap was silence
    late = detection.observe(
        Signal("road-late", ts + 86400, "t", "metric", "road.speed", 60.0, {}, None, "info")
    )
    assert late.anomaly and "silence" in late.anomaly.detectors  # a day without readings still is


def test_silence_is_judged_on_arrival_not_on_the_points_own_times() -> None:
    """Back-dated points (a backfill of last week) do not make a series 'stop reporting'."""
    now = T0 + 7 * 86400
    backfill = Detection()
    for signal in points(noise(200)):
        assert signal is not None
        backfill.observe(signal, arrived_at=now)  # all of last week's points arrive now
    assert backfill.sweep(now + 3600) == []
    live = Detection()
    for signal in points(noise(200)):
        assert signal is not None
        live.observe(signal, arrived_at=signal.ts + 2.0)  # each arrives as it happens
    last_arrival = T0 + STEP * 199 + 2.0
    assert live.sweep(last_arrival + 5 * STEP) == []  # a few missed points: not yet
    [found] = live.sweep(last_arrival + 61 * STEP)
    assert found.series == "pay.latency" and "has not reported for 61 min" in found.explanation


def test_a_shift_that_ends_closes_its_episode_and_the_recovery_is_not_an_anomaly() -> None:
    """40 minutes at 950 instead of 100, then back: one episode, closed soon after the return."""
    rng = random.Random(1)
    values = [rng.gauss(100, 3) for _ in range(300)] + [rng.gauss(950, 20) for _ in range(40)]
    values += [rng.gauss(100, 3) for _ in range(200)]
    detection = Detection()
    transitions, anomalies_after = [], []
    for i, signal in enumerate(points(values)):
        assert signal is not None
        obs = detection.observe(signal)
        if obs.transition:
            transitions.append((i, obs.transition))
        if obs.anomaly and i >= 340:
            anomalies_after.append(obs.anomaly.explanation)
    assert transitions[0] == (300, "opened")
    assert transitions[1][1] == "closed" and transitions[1][0] <= 340 + Hysteresis().quiet_points + 2
    assert len(transitions) == 2 and anomalies_after == []  # no "unusually low" on the way back


def test_anomaly_says_what_was_expected_and_why() -> None:
    detection = Detection()
    found = [o.anomaly for o in map(detection.observe, points([*noise(100), 420.0])) if o and o.anomaly]
    assert len(found) == 1
    anomaly = found[0]
    assert anomaly.lower < anomaly.expected < anomaly.upper < anomaly.value
    assert 185 < anomaly.expected < 215
    assert anomaly.score > 0.99 and anomaly.detectors == ("level",)
    assert "pay.latency 420, expected 19" in anomaly.explanation and "(usual " in anomaly.explanation
    assert "σ above (level)" in anomaly.explanation


def test_hysteresis_opens_high_keeps_open_lower_and_closes_after_quiet() -> None:
    detection = Detection(policy=Hysteresis(open_score=0.58, keep_score=0.3, quiet_points=5))
    values = [*noise(100), 260.0, 237.0, 237.0, 237.0, *noise(10, seed=21)]
    seen = [o for o in map(detection.observe, points(values)) if o]
    transitions = [(i, o.transition) for i, o in enumerate(seen) if o.transition]
    # Opened once at the 6σ point; the 3.7σ points after it (one scoring above the open
    # score again) keep that episode open instead of opening new ones; five calm points
    # after the last elevated one close it.
    assert transitions == [(100, "opened"), (110, "closed")]
    assert all(o.open for o in seen[100:110])


def test_a_flapping_series_is_reported_once_as_flapping() -> None:
    policy = Hysteresis(quiet_points=3, flap_window_s=3600, flap_quiet_factor=6)
    detection = Detection(policy=policy)
    values = noise(170)
    for spike_at in (110, 120, 130):
        values[spike_at] = 300.0
    seen = [
        (i, o.transition, o.flapping)
        for i, o in enumerate(map(detection.observe, points(values)))
        if o and o.transition
    ]
    # The first episode opens and closes; the second opens as flapping and stays open
    # through the third spike, closing only after 6x the quiet period (18 points).
    assert seen == [
        (110, "opened", False),
        (113, "closed", False),
        (120, "opened", True),
        (148, "closed", True),
    ]


def test_state_survives_a_restart_and_is_small() -> None:
    signals = points([*noise(200), 420.0])
    first = Detection()
    for s in signals[:200]:
        assert s is not None
        first.observe(s)
    saved = first.dirty_states()
    assert len(saved["pay.latency"]) == state_bytes(first) <= 1000  # under 1 KB per series
    assert first.dirty_states() == {}  # nothing changed since

    restarted = Detection()
    restarted.restore(saved)
    last = signals[200]
    assert last is not None
    assert restarted.observe(last).transition == "opened"  # no warm-up again


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    cut=st.integers(1, 1199),
    spikes=st.lists(st.tuples(st.integers(0, 1199), st.floats(-80, 80)), max_size=6),
)
def test_a_restart_at_any_point_changes_no_verdict(
    seed: int, cut: int, spikes: list[tuple[int, float]]
) -> None:
    """Saved and restored anywhere (a worker handing a series over), the series gets the
    same anomalies and the same episodes as without the restart: the records, the peak,
    the tails and the gap estimates all travel with the state."""
    rng = random.Random(seed)
    values: list[float | None] = [rng.gauss(200, 10) * (1 + 3 * (rng.random() < 0.02)) for _ in range(1200)]
    for i, z in spikes:
        values[i] = 200 + z * 10
    for _ in range(rng.randrange(3)):  # a gap or two, some long enough to be silences
        start = rng.randrange(1100)
        for i in range(start, start + rng.randrange(5, 80)):
            values[i] = None
    signals = [s for s in points(values) if s is not None]

    def verdicts(detection: Detection, part: list[Signal]) -> list[tuple[object, bool]]:
        return [(o.transition, o.anomaly is not None) for o in map(detection.observe, part)]

    before = Detection()
    first = verdicts(before, signals[:cut])
    after = Detection()
    after.restore(before.dirty_states())
    assert first + verdicts(after, signals[cut:]) == verdicts(Detection(), signals)


def test_unreadable_saved_state_means_relearning_not_crashing() -> None:
    detection = Detection()
    detection.restore({"x": b"\x02garbage", "y": b""})
    assert not detection.known("x") and not detection.known("y")
    assert EnsembleDetector().unpack(EnsembleDetector().pack(EnsembleDetector().new_state()))
    assert STATE_BYTES == len(EnsembleDetector().pack(EnsembleDetector().new_state()))


def test_local_hours_follow_the_time_zone_and_weekends() -> None:
    hours = LocalHours("Europe/Berlin")
    saturday_noon_utc = 1_795_003_200.0 - (1_795_003_200.0 % 86400) + 12 * 3600
    hour, _weekend = hours.position(saturday_noon_utc)
    assert hour in (13.0, 14.0)  # UTC+1 or +2
    assert LocalHours("UTC").position(0.0) == (0.0, False)  # 1970-01-01 was a Thursday
    assert LocalHours("UTC").position(2 * 86400 + 3600)[1]  # Saturday


def test_score_is_monotonic_in_z_and_bounded() -> None:
    scores = [score_of(z) for z in (0, 2, 3, 4, 5, 6, 10, 100)]
    assert scores == sorted(scores)
    assert 0 <= scores[0] and scores[-1] <= 1
    assert score_of(-6) == score_of(6)


def test_a_temporary_shift_is_one_alarm_open_while_away_and_closed_after_the_return() -> None:
    values = [*noise(200, seed=31), *(v + 60 for v in noise(60, seed=32)), *noise(100, seed=33)]
    detection = Detection()
    seen = [
        (i, o.transition) for i, o in enumerate(map(detection.observe, points(values))) if o and o.transition
    ]
    assert seen[0] == (200, "opened")
    assert len(seen) == 2 and seen[1][1] == "closed"
    assert seen[1][0] > 260  # open for the whole time the level was away, closed after it came back


def test_a_slow_climb_is_found_once_the_usual_moves_are_known() -> None:
    # Day 0 is a Wednesday: by Monday 05:00 (day 5) the weekday buckets have three days of
    # usual moves. (Weekend buckets need three weekend days: two weekends.)
    start = 1440 * 5 + 300
    values = noise(start + 300, seed=41)
    for k in range(300):  # up 6σ over two hours, then staying there: no single point is extreme
        values[start + k] += 60.0 * min(k + 1, 120) / 120
    found = alarms(values)
    assert any(start + 30 <= a < start + 120 for a in found), found
    assert not [a for a in found if a < start]  # quiet before it


def test_drift_is_not_judged_without_days_of_history() -> None:
    values = noise(600, seed=42)
    for k in range(200):
        values[400 + k] += 60.0 * min(k + 1, 120) / 120
    assert alarms(values) == []  # known limit: a series younger than 3 days has no usual moves yet


def test_the_explanation_says_for_how_long() -> None:
    detection = Detection()
    values = [*noise(200, seed=51), *(v + 80 for v in noise(10, seed=52))]
    found = [o.anomaly for o in map(detection.observe, points(values)) if o and o.anomaly]
    assert "for" not in found[0].explanation.rsplit(")", 1)[1]  # the first point: just started
    assert found[-1].explanation.endswith(", for 9 min")


def test_packing_some_series_leaves_the_others_pending_save() -> None:
    detection = Detection()
    for name in ("kept.a", "given.b"):
        for signal in points(noise(40), name=name):
            assert signal is not None
            detection.observe(signal)
    assert set(detection.packed(["given.b"])) == {"given.b"}
    assert set(detection.dirty_states()) == {"kept.a", "given.b"}  # nothing marked saved by packing


def test_over_dispersed_counts_are_judged_by_their_own_spread() -> None:
    """Tweet-like counts (median ~14, IQR ~13): 36 is an ordinary busy interval, 150 is not."""
    rng = random.Random(8)
    # A gamma-Poisson mixture: counts that vary far more than a Poisson of the same mean.
    values = [float(poisson_sample(rng, rng.gammavariate(2.0, 8.0))) for _ in range(3000)]
    values[2500] = 36.0
    values[2800] = 150.0
    opened = opened_at(values)
    # A plain Poisson tail found this series anomalous all the time: one endless flapping
    # episode from the first hour, so the real surge at 2800 was never news.
    assert 2500 not in opened and 2800 in opened
    assert len(opened) <= 6  # still a few in two days on a mixture this heavy-tailed


def opened_at(values: list[float]) -> list[int]:
    return [
        i for i, o in enumerate(map(Detection().observe, points(values))) if o and o.transition == "opened"
    ]


def test_the_ring_after_an_incident_is_not_a_new_alert_but_a_strong_one_is() -> None:
    for start in (200, 500):  # while the series settles (no records yet), and after
        values = noise(start + 200)
        values[start] = 400.0  # the incident: 20σ
        values[start + 40] = 250.0  # a ring soon after it closed: 5σ, below the refractory bar
        values[start + 100] = 300.0  # 10σ, but half the incident's: still its aftermath
        values[start + 160] = 700.0  # 50σ: stronger than the incident, news even this soon
        assert opened_at(values) == [start, start + 160]


def test_a_surprise_within_the_series_recent_range_is_not_news_until_that_range_fades() -> None:
    """One point a minute for ten days; the usual 200 ± 10."""
    values = noise(14400)
    values[400] = 0.0  # an outage: 20σ down
    values[1100] = 270.0  # 7σ up: further up than the series has been (the outage went down), news
    values[1400] = 100.0  # 10σ down, 1000 points later, but not as low as the outage: not news
    values[1800] = 265.0  # 6.5σ up, not as high as the last rise: not news
    values[400 + 7 * 1440] = 0.0  # the same outage a week later: the record has faded, news
    assert opened_at(values) == [400, 1100, 400 + 7 * 1440]


def test_one_wild_point_does_not_mute_a_series_for_weeks() -> None:
    """A 100σ glitch sets a record that takes weeks to fade; a 25σ incident three days later
    is still news, as it is three times the strongest surprise of those days."""
    values = noise(600 + 3 * 1440 + 100)
    values[600] = 200.0 + 100 * 10.0
    values[600 + 3 * 1440] = 200.0 + 25 * 10.0
    assert opened_at(values) == [600, 600 + 3 * 1440]


def test_a_spike_to_a_height_the_series_reaches_every_few_days_is_not_news() -> None:
    """A nightly batch job writes 40x the usual bytes; the model makes 50-500σ of each one."""
    rng = random.Random(4)
    values = [rng.gauss(1e6, 5e4) for _ in range(6000)]
    values[400] = 4e7
    for night in range(1120, 5900, 720):  # twelve hours apart, at one point a minute
        values[night] = rng.uniform(3.0e7, 3.5e7)  # 75-88% of the first
    values[5900] = 6e7  # higher than any night so far: news
    assert opened_at(values) == [400, 5900]  # before the records, each of the 8 nights was news


def test_a_heavy_tailed_series_is_judged_by_its_own_tails() -> None:
    """Student-t noise (3 degrees of freedom) has 4-5σ points every day; they are its normal."""
    rng = random.Random(11)

    def student_t() -> float:
        return rng.gauss(0, 1) / math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(3)) / 3)

    values = [200.0 + 10.0 * student_t() for _ in range(5000)]
    values[4500] = 200.0 + 10.0 * 60  # a real incident: far outside even these tails
    opened = opened_at(values)
    assert 4500 in opened
    assert len(opened) <= 10  # 15 before the tails were learned (3.5 days of points); 1 is true


def legacy_layout(packed: bytes, missing: int = 0) -> bytes:
    """A state as earlier versions saved it: each bucket's last day (48 x 2 bytes) after the
    days counts instead of the seen-today mask (10 bytes, last), and the last `missing`
    bytes of what was appended over time not there yet."""
    head = STATE_BYTES - 10 - 12 - 9 - 4 - 17 * 48
    body = packed[:-10]
    body = body[: head + 9 * 48] + bytes(96) + body[head + 9 * 48 :]
    return body[: len(body) - missing]


def test_state_saved_by_earlier_versions_still_loads() -> None:
    detector = EnsembleDetector()
    model = detector.new_state()
    for i, value in enumerate(noise(100)):
        detector.observe(model, T0 + STEP * i, value)
    packed = detector.pack(model)
    previous = detector.unpack(legacy_layout(packed))  # the layout before the seen-today mask
    assert previous.step == pytest.approx(model.step) and list(previous.s_days) == list(model.s_days)
    assert previous.m_mad == model.m_mad and previous.seen == 0
    restored = detector.unpack(legacy_layout(packed, 4 + 9 + 12))  # before the tail estimate
    assert restored.n == model.n and restored.level == model.level and restored.tail == 3.29
    before_cadence = detector.unpack(legacy_layout(packed, 9 + 12))  # before the gap and move tails
    assert before_cadence.tail == pytest.approx(model.tail) and before_cadence.gap_tail == 6.0
    before_step = detector.unpack(legacy_layout(packed, 12))  # before the values' step
    assert before_step.gap_tail == pytest.approx(model.gap_tail) and before_step.step == 0.0
    assert math.isnan(before_step.last_value)  # so its first change is not taken for a step
    assert detector.observe(before_step, T0 + STEP * 100, 205.0) is not None and before_step.step == 0.0
    with pytest.raises(struct.error, match="expected 946 bytes of state, got 900"):
        detector.unpack(packed[:900])


def test_state_saved_in_earlier_episode_formats_still_loads() -> None:
    first = Detection()
    for signal in points(noise(400)):
        assert signal is not None
        first.observe(signal)
    blob = first.dirty_states()["pay.latency"]
    v4 = bytes([4]) + blob[1:33] + blob[49:]  # format 4: no records after the peak
    v3 = bytes([3]) + blob[1:29] + blob[49:]  # format 3: no peak after the arrival time either
    for old in (v4, v3):
        restarted = Detection()
        restarted.restore({"pay.latency": old})
        assert restarted.known("pay.latency")
        signal = points([*noise(400), 420.0])[400]
        assert signal is not None
        assert restarted.observe(signal).transition == "opened"  # its state, not a fresh warm-up
    kept = Detection()
    kept.restore({"pay.latency": blob})
    assert kept._series["pay.latency"].episode.above == first._series["pay.latency"].episode.above > 0


def test_a_shift_on_a_series_that_often_shifts_says_so() -> None:
    detector = EnsembleDetector()
    model = detector.new_state()
    notes = []
    for i, value in enumerate([*noise(300), *noise(40, seed=2, mean=260.0)]):  # a lasting 6σ step
        if i == 300:
            model.move_tail = 4.5  # as if learned from the shifts this series showed before
        verdict = detector.observe(model, T0 + STEP * i, value)
        if verdict and verdict.drivers == ("shift",) and abs(verdict.z) >= detector.driver_z:
            notes.append(verdict.note)  # a shift strong enough to be news
    assert notes and all(note.startswith("this series often shifts: ") for note in notes), notes


def test_a_series_of_zeros_and_spikes_is_judged_on_its_own_steps_not_a_zero_scale() -> None:
    """Mostly 0, now and then about 2.5: the first spike is news, the next ones are its usual
    steps (not 10⁹σ each, as with a scale collapsed to nothing), and one forty times bigger is news."""
    rng = random.Random(6)
    values = [round(rng.uniform(2.0, 3.0), 2) if i % 97 == 50 else 0.0 for i in range(2000)]
    values[1800] = 100.0
    detection, opened = Detection(), []
    for i, signal in enumerate(points(values)):
        assert signal is not None
        obs = detection.observe(signal)
        if obs.transition == "opened":
            opened.append((i, round(abs(obs.assessment.z)) if obs.assessment else 0))
    assert [i for i, _ in opened] == [50, 1800], opened
    first = Detection()
    for signal in points(values[:51]):
        assert signal is not None
        last = first.observe(signal)
    assert last.anomaly is not None and "over 1000σ above" in last.anomaly.explanation  # not "2790000000.0σ"
    assert opened[1][1] < 100  # judged against the series' steps of about 2: some 50σ, not 10⁹σ
