"""Failures caused for real: a worker killed mid-batch, Redis stopped and started again."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from bot.http import build_app
from engine.errors import QueueUnavailable
from engine.intake.ingest import Ingest
from engine.signal import Signal, make_signal
from storage.keys import Keys
from storage.redis_stream import RedisSignalQueue, connect
from storage.sqlite import SqliteRecord
from tests.conftest import (
    REDIS_URL,
    RecordingSink,
    ServerProcess,
    drain,
    free_port,
    make_processor,
    make_worker,
)

ROOT = Path(__file__).resolve().parents[2]
TS = 1_795_000_000


def signals(n: int, series: str = "load.gen") -> list[Signal]:
    return [make_signal(series=f"{series}.{i % 50}", value=float(i % 7), ts=TS + i) for i in range(n)]


async def publish(queue: RedisSignalQueue, items: list[Signal], chunk: int = 1000) -> None:
    for start in range(0, len(items), chunk):
        await queue.publish(items[start : start + chunk], time.time())


async def test_killed_worker_process_loses_nothing_and_doubles_nothing(
    queue: RedisSignalQueue, record: SqliteRecord, redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    total = 60_000
    await queue.ensure_group()
    await publish(queue, signals(total))
    env = {
        **os.environ,
        "SIGOPS_REDIS_URL": REDIS_URL,
        "SIGOPS_REDIS_PREFIX": keys.prefix,
        "SIGOPS_DATA_DIR": str(tmp_path),  # the same SQLite file as `record`
        "SIGOPS_WORKER_BATCH": "2",  # small batches: many chances to die mid-batch
        "SIGOPS_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], cwd=ROOT, env=env)
    try:
        pending_at_kill = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending_at_kill = await queue.pending_count()
            if pending_at_kill and 0 < await record.count("signals") < total // 2:
                break
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # mid-batch: read, maybe recorded, not acknowledged
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert pending_at_kill > 0, "the worker was not caught mid-batch"
    recorded_by_dead = await record.count("signals")
    assert 0 < recorded_by_dead < total

    survivor = make_worker(
        "survivor", queue, make_processor(record, redis, keys), RecordingSink(), reclaim_idle_ms=100
    )
    await asyncio.sleep(0.15)  # let the dead worker's entries go idle
    await drain(survivor, max_steps=5000)
    assert await record.count("signals") == total
    assert await queue.pending_count() == 0


async def test_consumer_dying_between_read_and_ack_is_reclaimed_once(
    queue: RedisSignalQueue, record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    await queue.ensure_group()
    await publish(queue, signals(500))
    taken = await queue.read("doomed", count=2, block_ms=10)  # two entries read, never acknowledged
    assert len(taken) == 200

    live = make_worker(
        "live", queue, make_processor(record, redis, keys), RecordingSink(), reclaim_idle_ms=50
    )
    await asyncio.sleep(0.1)
    processed = await drain(live)
    assert processed == 500
    assert await record.count("signals") == 500
    assert await queue.pending_count() == 0


async def test_redelivered_entries_after_commit_are_not_recorded_twice(
    queue: RedisSignalQueue, record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    # A worker that committed but died before XACK: the entries come back, the record stays the same.
    await queue.ensure_group()
    await publish(queue, signals(300))
    processor = make_processor(record, redis, keys)
    entries = await queue.read("crashed", count=3, block_ms=10)
    await processor.process(entries)  # committed; then "crashed" before ack
    assert await record.count("signals") == 300
    live = make_worker("live", queue, processor, RecordingSink(), reclaim_idle_ms=10)
    await asyncio.sleep(0.05)
    await drain(live)
    assert await record.count("signals") == 300
    assert await queue.pending_count() == 0


# -- Redis outage on a throwaway server (the shared one is never stopped) -----------------


class ThrowawayRedis(ServerProcess):
    def __init__(self, port: int) -> None:
        self.port = port

    def start(self) -> None:
        self.spawn(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("throwaway redis-server did not start")


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed for the outage tests (.ci/run installs it)")
    server = ThrowawayRedis(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def outage_setup(
    throwaway_redis: ThrowawayRedis, record: SqliteRecord
) -> AsyncIterator[tuple[TestClient[Any, Any], RedisSignalQueue, aioredis.Redis]]:
    client_redis = connect(f"redis://127.0.0.1:{throwaway_redis.port}/0", timeout_s=2.0)
    queue = RedisSignalQueue(client_redis, Keys("outage"), maxlen=10_000)
    app = build_app(
        Ingest(queue, max_records=1000),
        {"redis": queue.ping, "sqlite": record.ping},
        token=None,
        max_body_bytes=1 << 20,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, queue, client_redis
    await client_redis.aclose()


async def test_redis_down_means_503_with_retry_after_then_recovery(
    outage_setup: tuple[TestClient[Any, Any], RedisSignalQueue, aioredis.Redis],
    throwaway_redis: ThrowawayRedis,
    record: SqliteRecord,
) -> None:
    client, queue, client_redis = outage_setup
    body = [{"series": "a.b", "value": 1, "ts": TS}]
    assert (await client.post("/v1/signals", json=body)).status == 202

    throwaway_redis.stop()
    started = time.monotonic()
    down = await client.post("/v1/signals", json=body)
    assert down.status == 503
    assert down.headers["Retry-After"] == "5"
    assert "Redis" in (await down.json())["error"]
    assert time.monotonic() - started < 5  # refused quickly, not hung
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["redis"] == "unavailable"

    # A worker rides out the outage instead of crashing...
    worker = make_worker("w", queue, make_processor(record, client_redis, Keys("outage")), RecordingSink())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.5)
    assert not task.done()

    throwaway_redis.start()  # ...and Redis comes back (empty: it keeps nothing on disk)
    deadline = time.monotonic() + 10
    while (
        await client.post("/v1/signals", json=[{"series": "a.b", "value": 2, "ts": TS + 1}])
    ).status != 202:
        assert time.monotonic() < deadline, "ingest did not recover"
        await asyncio.sleep(0.2)
    assert (await client.get("/readyz")).status == 200
    while await record.count("signals") < 1:
        assert time.monotonic() < deadline, "worker did not resume"
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.record_free
async def test_requests_sent_together_while_redis_is_down_each_get_a_503_then_all_get_through(
    outage_setup: tuple[TestClient[Any, Any], RedisSignalQueue, aioredis.Redis],
    throwaway_redis: ThrowawayRedis,
) -> None:
    """Requests that share a Redis command share its failure: each is refused, none hangs,
    and the ones after Redis is back are all taken."""
    client, _, client_redis = outage_setup

    async def post(n: int) -> int:
        body = [{"series": f"s{n}.x", "value": 1, "ts": TS, "id": f"id-{n}"}]
        return (await client.post("/v1/signals", json=body)).status

    throwaway_redis.stop()
    started = time.monotonic()
    assert await asyncio.gather(*(post(n) for n in range(10))) == [503] * 10
    assert time.monotonic() - started < 10
    throwaway_redis.start()
    deadline = time.monotonic() + 10
    while await post(99) != 202:  # the first calls may meet the reconnect
        assert time.monotonic() < deadline, "ingest did not recover"
        await asyncio.sleep(0.2)
    assert await asyncio.gather(*(post(n) for n in range(10))) == [202] * 10
    assert await client_redis.xlen(Keys("outage").stream(0)) == 11  # each signal once, in its own entry


async def test_a_redis_that_restarts_empty_gets_its_consumer_group_back_quietly(
    outage_setup: tuple[TestClient[Any, Any], RedisSignalQueue, aioredis.Redis],
    throwaway_redis: ThrowawayRedis,
    record: SqliteRecord,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, queue, client_redis = outage_setup
    worker = make_worker("w", queue, make_processor(record, client_redis, Keys("outage")), RecordingSink())
    await queue.ensure_group()
    await queue.publish([make_signal(series="a.b", value=1.0, ts=TS)], time.time())
    await drain(worker)  # the worker has read: it knows the group exists
    throwaway_redis.stop()
    throwaway_redis.start()  # back, and empty: no stream, no group, no loaded publish script
    caplog.set_level(logging.INFO)
    await asyncio.sleep(0.2)
    deadline = time.monotonic() + 10
    while True:  # the first calls may meet the reconnect; then reading resumes on its own
        try:
            await queue.publish([make_signal(series="a.b", value=2.0, ts=TS + 1)], time.time())
            break
        except QueueUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    while await record.count("signals") < 2:
        assert time.monotonic() < deadline, "the worker did not resume on the empty Redis"
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert "consumer group missing (Redis restarted empty?); recreating it" in caplog.text
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text
