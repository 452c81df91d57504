"""Worker behaviour on the real Redis: state survives restarts, a poison signal is set aside."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from engine.alerting.alerts import AlertPolicy
from engine.detection.detect import Detection, Observation
from engine.detection.ensemble import EnsembleDetector
from engine.intake import worker as worker_module
from engine.intake.worker import SignalProcessor
from engine.ports import QueuedSignal
from engine.signal import Signal, make_signal
from storage.keys import Keys
from storage.redis_state import RedisDetectorStateStore
from storage.redis_stream import RedisSignalQueue
from storage.sqlite import MIGRATIONS, SqliteRecord
from tests.conftest import RecordingSink, drain, make_worker

T0 = 1_795_000_000.0


def history(n: int, series: str = "pay.latency") -> list[Any]:
    rng = random.Random(5)
    return [make_signal(series=series, value=rng.gauss(200, 10), ts=T0 + 60 * i) for i in range(n)]


def warm_after_50(record: SqliteRecord, redis: aioredis.Redis, keys: Keys) -> SignalProcessor:
    """A processor as one worker process has it (its own Detection), warm after 50 points,
    sharing the record and Redis: call it again for the process that comes after."""
    detection = Detection(EnsembleDetector(warmup=50))
    return SignalProcessor(record, RedisDetectorStateStore(redis, keys), detection, AlertPolicy())


def incident_batches(
    series: str, incident: Sequence[float] = (600.0, 620.0, 610.0)
) -> Callable[[int, int], list[QueuedSignal]]:
    """Entries of a calm series (200 ± 10) with an incident from point 150, as a worker reads them."""
    rng = random.Random(11)
    values = [rng.gauss(200, 10) for _ in range(300)]
    values[150 : 150 + len(incident)] = incident

    def batch(lo: int, hi: int) -> list[QueuedSignal]:
        return [
            QueuedSignal(
                f"{series}-{i}", make_signal(series=series, value=values[i], ts=T0 + 60 * i), T0 + 60 * i + 2
            )
            for i in range(lo, hi)
        ]

    return batch


@pytest.mark.parametrize("saved_before", [True, False], ids=["state-saved-before", "never-saved"])
async def test_a_worker_killed_between_commit_and_state_save_is_taken_over_exactly(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys, saved_before: bool
) -> None:
    """The batch a worker committed but whose states it never saved comes back to the next
    worker as signals already recorded, which are not observed again: the next worker
    replays the record's points after the saved state (all of them, for a series it never
    saved) instead, and goes on from the very state (and alerts) of a worker never killed."""
    steady_batch, killed_batch = incident_batches("steady.latency"), incident_batches("killed.latency")
    steady = warm_after_50(record, redis, keys)
    for lo in (0, 100, 200):
        await steady.process(steady_batch(lo, lo + 100))
        await steady.save_states()
    first = warm_after_50(record, redis, keys)
    lost = 0
    if saved_before:
        await first.process(killed_batch(0, 100))
        await first.save_states()
        lost = 100
    await first.process(killed_batch(lost, lost + 100))  # committed; killed before the save
    second = warm_after_50(record, redis, keys)
    again = await second.process(killed_batch(lost, lost + 100))  # redelivered
    assert again.new_signals == 0
    for lo in range(lost + 100, 300, 100):
        await second.process(killed_batch(lo, lo + 100))

    killed = second.detection.packed(["killed.latency"])["killed.latency"]
    assert killed == steady.detection.packed(["steady.latency"])["steady.latency"]
    alerts = {a.series: (a.started_at, a.status) for a in await record.alerts_since(T0)}
    assert alerts["killed.latency"] == alerts["steady.latency"]
    assert alerts["killed.latency"][0] == T0 + 60 * 150


async def test_a_series_whose_state_is_lost_relearns_from_its_latest_points(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A series with no saved state and more history than a replay takes (its state was lost:
    Redis restarted empty, or the embedded default restarted) relearns from its latest
    points, read in the order they were recorded, not from nothing and not from its first."""
    monkeypatch.setattr(worker_module, "REPLAY_LIMIT", 50)
    batch = incident_batches("old.latency")
    await warm_after_50(record, redis, keys).process(batch(0, 100))  # recorded; no state saved
    second = warm_after_50(record, redis, keys)
    await second.process(batch(100, 110))
    assert cast(Any, second.detection._series["old.latency"].model).n == 60

    relearned = warm_after_50(record, redis, keys).detection
    for entry in batch(50, 110):
        relearned.observe(entry.signal, entry.received_at)
    assert second.detection.packed(["old.latency"]) == relearned.packed(["old.latency"])


async def test_a_state_far_behind_the_record_catches_up_on_its_latest_points(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved state further behind the record than a replay takes (Redis came back from an
    old snapshot) catches up on the series' latest points, not on the first ones after it:
    otherwise its next live point comes an hour and a half after the last one it saw, and a
    series that never stopped is announced as silent."""
    monkeypatch.setattr(worker_module, "REPLAY_LIMIT", 50)
    batch = incident_batches("old.latency")
    first = warm_after_50(record, redis, keys)
    await first.process(batch(0, 60))
    await first.save_states()
    snapshot = await redis.hget(keys.detector_state, "old.latency")
    await first.process(batch(60, 140))
    await first.save_states()
    await first.process(batch(140, 150))
    await redis.hset(keys.detector_state, "old.latency", snapshot)  # Redis restored from the old snapshot

    second = warm_after_50(record, redis, keys)
    outcome = await second.process(batch(150, 151))  # the incident's first point
    assert second.detection.last_ts("old.latency") == T0 + 60 * 150
    (change,) = outcome.alert_changes
    assert "silent" not in change.alert.explanation, change.alert.explanation
    assert cast(Any, second.detection._series["old.latency"].model).n == 60 + 50 + 1


async def test_after_catching_up_over_a_gap_a_moderate_incident_still_opens(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-up's first point comes long after the stale state's last. Read as a silence,
    it would open an episode that the record never had, and leave the series in the quiet
    spell after one, where only a ~7σ point opens another: a 6σ incident right after the
    catch-up must be announced as it would have been."""
    monkeypatch.setattr(worker_module, "REPLAY_LIMIT", 50)
    batch = incident_batches("mid.latency", incident=[265.0])  # about 6σ

    first = warm_after_50(record, redis, keys)
    await first.process(batch(0, 60))
    await first.save_states()
    snapshot = await redis.hget(keys.detector_state, "mid.latency")
    await first.process(batch(60, 150))
    await redis.hset(keys.detector_state, "mid.latency", snapshot)  # Redis back from the old snapshot

    second = warm_after_50(record, redis, keys)
    outcome = await second.process(batch(150, 151))
    assert [(c.alert.series, c.change) for c in outcome.alert_changes] == [("mid.latency", "opened")]


async def test_the_series_of_a_batch_share_the_replay(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many series lost their state, one batch replays at most the budget."""
    monkeypatch.setattr(worker_module, "REPLAY_BUDGET", 120)
    names = [f"lost{i}.latency" for i in range(4)]
    batches = [incident_batches(name) for name in names]
    await warm_after_50(record, redis, keys).process([e for b in batches for e in b(0, 100)])
    second = warm_after_50(record, redis, keys)
    await second.process([e for b in batches for e in b(100, 101)])
    assert [cast(Any, second.detection._series[n].model).n for n in names] == [31] * 4  # 120 / 4, + 1


@pytest.mark.parametrize("ending", ["shutdown", "kill"])
async def test_detector_state_survives_a_worker_restart(
    queue: RedisSignalQueue, record: SqliteRecord, redis: aioredis.Redis, keys: Keys, ending: str
) -> None:
    """Whether the worker shut down (saving its states) or was killed after its last ack,
    the next one goes on from every point acknowledged: no second warm-up."""
    await queue.ensure_group()
    await queue.publish(history(100), time.time())
    worker = make_worker("before", queue, warm_after_50(record, redis, keys), RecordingSink())
    await drain(worker)
    if ending == "shutdown":
        await worker.flush_states()  # what `run` does at shutdown
    assert await redis.hexists(keys.detector_state, "pay.latency")

    # A new process: fresh Detection, same Redis. One spike, no warm-up needed.
    second = warm_after_50(record, redis, keys)
    sink = RecordingSink()
    await queue.publish([make_signal(series="pay.latency", value=600.0, ts=T0 + 60 * 100)], time.time())
    await drain(make_worker("after", queue, second, sink))
    assert [(series, change) for _, series, change in sink.notes] == [("pay.latency", "opened")]


async def test_an_alert_opened_after_the_last_state_save_still_closes_after_a_kill(
    queue: RedisSignalQueue, record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    """A worker killed after committing an opened alert but before saving its detector state: the
    next owner restores a state without that episode, and must still close the alert when the
    series is calm again instead of leaving it firing for ever."""
    await queue.ensure_group()
    first = make_worker("before", queue, warm_after_50(record, redis, keys), RecordingSink())
    await queue.publish(history(100), time.time())
    await drain(first)
    await first.flush_states()
    before_spike = await redis.hget(keys.detector_state, "pay.latency")
    await queue.publish([make_signal(series="pay.latency", value=900.0, ts=T0 + 60 * 100)], time.time())
    await drain(first)  # opened and committed ...
    # ... and killed between the commit and the state's save: Redis holds the state before it.
    await redis.hset(keys.detector_state, "pay.latency", before_spike)
    opened = await record.open_alerts(["anomaly:pay.latency"])
    assert [a.status for a in opened.values()] == ["firing"]

    sink = RecordingSink()
    rng = random.Random(6)
    calm = [
        make_signal(series="pay.latency", value=rng.gauss(200, 10), ts=T0 + 60 * i) for i in range(101, 141)
    ]
    await queue.publish(calm, time.time())
    await drain(make_worker("after", queue, warm_after_50(record, redis, keys), sink))
    assert [(series, change) for _, series, change in sink.notes] == [("pay.latency", "resolved")]
    assert await record.open_alerts(["anomaly:pay.latency"]) == {}


class PoisonDetection:
    """Detection with a bug that only one value triggers (wrapping the real one: compiled,
    `Detection` and the ensemble are native classes, which Python classes cannot inherit
    from or stand in for)."""

    def __init__(self) -> None:
        self.real = Detection()

    def observe(self, signal: Signal, arrived_at: float | None = None) -> Observation:
        if signal.value == 666.0:
            raise ZeroDivisionError("bug in detector")
        return self.real.observe(signal, arrived_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_poison_signal_is_set_aside_and_the_rest_recorded(
    queue: RedisSignalQueue,
    record: SqliteRecord,
    redis: aioredis.Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await queue.ensure_group()
    good = [make_signal(series="a.b", value=float(i), ts=T0 + i) for i in range(50)]
    poison = make_signal(series="a.b", value=666.0, ts=T0 + 1000)
    await queue.publish([*good[:25], poison, *good[25:]], time.time())
    detection = cast(Detection, PoisonDetection())
    processor = SignalProcessor(record, RedisDetectorStateStore(redis, keys), detection, AlertPolicy())
    with caplog.at_level(logging.ERROR):
        await drain(make_worker("w", queue, processor, RecordingSink()))
    assert await record.count("signals") == 50
    assert await queue.pending_count() == 0  # nothing left to loop on
    dead = await redis.xrange(keys.dead_letters)
    assert len(dead) == 1
    assert b"bug in detector" in dead[0][1][b"error"]
    assert poison.id.encode() in dead[0][1][b"b"]
    assert "set aside" in caplog.text


@pytest.mark.sqlite_only
async def test_migrations_run_once_and_set_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    record = await SqliteRecord.open(path)
    async with record.conn.execute("PRAGMA user_version") as cursor:
        assert (await cursor.fetchone())[0] == len(MIGRATIONS)  # type: ignore[index]
    async with record.transaction() as tx:
        await tx.add_signals([(make_signal(series="a", value=1.0, ts=T0), T0)])
    await record.close()
    reopened = await SqliteRecord.open(path)  # would fail on CREATE TABLE if it migrated again
    assert await reopened.count("signals") == 1
    await reopened.close()


async def test_an_alert_names_the_deploy_before_it_and_the_other_anomalous_series(
    queue: RedisSignalQueue, record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    await queue.ensure_group()
    rng = random.Random(2)
    normal = [
        make_signal(
            series=f"checkout.{name}", value=rng.gauss(100, 5), ts=T0 + 60 * i, labels={"service": "checkout"}
        )
        for i in range(100)
        for name in ("errors", "latency_p99")
    ]
    deploy = make_signal(
        kind="change", series="checkout.deploy", ts=T0 + 60 * 98, text="deploy checkout v2.4",
        labels={"service": "checkout", "change_type": "deploy"},
    )  # fmt: skip
    spikes = [
        make_signal(series=f"checkout.{name}", value=300.0, ts=T0 + 60 * 100, labels={"service": "checkout"})
        for name in ("errors", "latency_p99")
    ]
    await queue.publish([*normal, deploy], time.time())
    sink = RecordingSink()
    worker = make_worker("w", queue, SignalProcessor(
        record, RedisDetectorStateStore(redis, keys), Detection(EnsembleDetector(warmup=50)), AlertPolicy()
    ), sink)  # fmt: skip
    await drain(worker)
    await queue.publish(spikes, time.time())
    await drain(worker)
    firing = {a.series: a for a in await record.firing_alerts()}
    assert set(firing) == {"checkout.errors", "checkout.latency_p99"}
    later = firing["checkout.latency_p99"]  # opened second in the batch: sees the first
    assert later.context["changes"] == ["started 2 min after deploy checkout v2.4"]
    assert later.context["other_series"] == ["checkout.errors"]
    assert later.risk > 0.5
    assert {d[0] for d in later.context["drivers"]} >= {"magnitude", "change", "breadth"}
