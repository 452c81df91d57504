"""Series ownership on the real Redis: shards shared out, and taken over from a dead worker."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from engine.intake.ownership import Ownership, shard_of
from engine.intake.worker import Worker
from engine.signal import make_signal
from storage.keys import Keys
from storage.redis_lease import RedisShardLeases
from storage.redis_stream import RedisSignalQueue
from storage.sqlite import SqliteRecord
from tests.conftest import RecordingSink, make_processor, make_worker

SHARDS = 4
TTL_MS = 600
T0 = 1_795_000_000.0


def series_signals(series_count: int, points: int) -> list:  # type: ignore[type-arg]
    return [
        make_signal(series=f"svc{s % 5}.metric{s}", value=float(p % 7), ts=T0 + 60 * p)
        for p in range(points)
        for s in range(series_count)
    ]


def owned_worker(
    name: str,
    queue: RedisSignalQueue,
    record: SqliteRecord,
    redis: aioredis.Redis,
    keys: Keys,
    reclaim_idle_ms: int = 100,
) -> Worker:
    ownership = Ownership(name, SHARDS, RedisShardLeases(redis, keys), ttl_ms=TTL_MS)
    worker = make_worker(
        name,
        queue,
        make_processor(record, redis, keys),
        RecordingSink(),
        reclaim_idle_ms=reclaim_idle_ms,
        batch_size=1,
    )
    worker.ownership = ownership
    return worker


async def settle(*workers: Worker, rounds: int = 8) -> None:
    """Let the workers heartbeat and rebalance a few times."""
    for _ in range(rounds):
        for worker in workers:
            worker._next_rebalance = 0.0
            await worker._owned_shards()
        await asyncio.sleep(0.02)


@pytest.fixture
async def pair(
    redis: aioredis.Redis, keys: Keys, record: SqliteRecord
) -> tuple[RedisSignalQueue, Worker, Worker]:
    """Two workers on one sharded queue, settled on their shares."""
    queue = RedisSignalQueue(redis, keys, maxlen=10_000, shards=SHARDS)
    a = owned_worker("a", queue, record, redis, keys)
    b = owned_worker("b", queue, record, redis, keys)
    await settle(a, b)
    assert a.ownership and b.ownership
    return queue, a, b


async def test_two_workers_share_the_shards_and_never_the_same_series(
    pair: tuple[RedisSignalQueue, Worker, Worker], record: SqliteRecord
) -> None:
    queue, a, b = pair
    assert a.ownership and b.ownership
    assert len(a.ownership.owned) == len(b.ownership.owned) == SHARDS // 2
    assert a.ownership.owned.isdisjoint(b.ownership.owned)

    signals = series_signals(40, 60)
    await queue.publish(signals, time.time())
    for _ in range(2000):
        outcomes = await asyncio.gather(a.step(), b.step())
        if not any(outcomes) and await record.count("signals") == len(signals):
            break
    assert await record.count("signals") == len(signals)
    seen_a = set(a.processor.detection.series_names())
    seen_b = set(b.processor.detection.series_names())
    assert seen_a and seen_b and seen_a.isdisjoint(seen_b)
    assert seen_a | seen_b == {s.series for s in signals}
    assert {shard_of(n, SHARDS) for n in seen_a} <= a.ownership.owned


async def test_a_dead_workers_shards_and_pending_signals_move_to_the_live_one(
    pair: tuple[RedisSignalQueue, Worker, Worker], record: SqliteRecord
) -> None:
    queue, a, b = pair
    assert a.ownership and b.ownership
    a_shards = set(a.ownership.owned)

    signals = series_signals(40, 60)
    await queue.publish(signals, time.time())
    await asyncio.gather(a.step(), b.step())
    await a.flush_states()  # a saved its detector state at some point...
    taken = await queue.read("a", count=2, block_ms=10, shards=sorted(a_shards))
    assert taken  # ...then read more and died before acknowledging: no release, no heartbeat

    await asyncio.sleep(3 * TTL_MS / 1000 + 0.2)  # its heartbeat and its leases lapse
    for _ in range(400):
        await b.step()
        if await record.count("signals") == len(signals) and await queue.pending_count() == 0:
            break
    assert b.ownership.owned == set(range(SHARDS))
    assert await record.count("signals") == len(signals)
    assert await queue.pending_count() == 0
    a_series = {s.series for s in signals if shard_of(s.series, SHARDS) in a_shards}
    assert a_series <= set(b.processor.detection.series_names())


async def test_a_dead_workers_pending_signals_are_taken_over_at_once_and_in_order(
    redis: aioredis.Redis, keys: Keys, record: SqliteRecord
) -> None:
    """What a dead worker read and never acknowledged is taken by the worker that gains its
    shards as soon as it owns them, before newer signals of the same series: not after
    `reclaim_idle_ms` (an hour here), which would see those points late and out of order."""
    queue = RedisSignalQueue(redis, keys, maxlen=10_000, shards=SHARDS)
    a = owned_worker("a", queue, record, redis, keys, reclaim_idle_ms=3_600_000)
    b = owned_worker("b", queue, record, redis, keys, reclaim_idle_ms=3_600_000)
    await settle(a, b)
    assert a.ownership and b.ownership
    a_shards = sorted(a.ownership.owned)
    early = series_signals(40, 10)
    await queue.publish(early, time.time())
    taken = await queue.read("a", count=100, block_ms=10, shards=a_shards)
    assert taken  # a read its shards' entries, then died before recording them
    late = [make_signal(series=s.series, value=s.value, ts=s.ts + 3600) for s in early]
    await queue.publish(late, time.time())
    await asyncio.sleep(3 * TTL_MS / 1000 + 0.2)  # its heartbeat and its leases lapse

    for _ in range(400):
        await b.step()
        if await record.count("signals") == 2 * len(early) and await queue.pending_count() == 0:
            break
    assert await record.count("signals") == 2 * len(early)
    assert await queue.pending_count() == 0
    recorded: dict[str, list[float]] = {}
    for series, ts in await record.db.rows("SELECT series, ts FROM signals ORDER BY rowid"):
        recorded.setdefault(series, []).append(ts)
    assert all(times == sorted(times) for times in recorded.values()), "points recorded out of order"


async def test_leaving_hands_shards_over_at_once(pair: tuple[RedisSignalQueue, Worker, Worker]) -> None:
    _, a, b = pair
    assert a.ownership and b.ownership
    await a.ownership.leave()
    await settle(b, rounds=2)
    assert b.ownership.owned == set(range(SHARDS))  # no waiting for leases to lapse
