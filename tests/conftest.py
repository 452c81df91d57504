"""Shared fixtures: a real Redis under a per-test key prefix, a temporary SQLite record."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.alerting.alerts import AlertPolicy
from engine.detection.detect import Detection, Hysteresis
from engine.detection.ensemble import EnsembleDetector
from engine.intake.worker import SignalProcessor, Worker, WorkerConfig
from storage.keys import Keys
from storage.redis_state import RedisDetectorStateStore
from storage.redis_stream import RedisSignalQueue, connect
from storage.sqlite import SqliteRecord

FIXTURES = Path(__file__).parent / "fixtures"
EXIT_STATUS = pytest.StashKey[int]()
REDIS_URL = os.environ.get("SIGOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def close_left_records(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stop the worker thread of every SQLite record a test opened and did not close.

    aiosqlite's thread is not a daemon: a test that fails before its `close()` (its frame kept
    alive by the report) would otherwise hold the whole run open after the last test.
    """
    opened: list[SqliteRecord] = []
    real_open = SqliteRecord.open.__func__  # type: ignore[attr-defined]

    async def tracked(cls: type[SqliteRecord], *args: Any, **kwargs: Any) -> SqliteRecord:
        rec: SqliteRecord = await real_open(cls, *args, **kwargs)
        opened.append(rec)
        return rec

    monkeypatch.setattr(SqliteRecord, "open", classmethod(tracked))
    yield
    for rec in opened:
        if isinstance(rec, SqliteRecord):
            rec.conn.stop()  # a no-op for a connection already closed


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Exit, naming them, if non-daemon threads would keep the finished run from ending."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        main = threading.main_thread()
        left = [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
        if not left:
            return
        time.sleep(0.2)
    names = ", ".join(sorted(t.name for t in left))
    print(f"\nthreads still running after the last test, which would hang the run: {names}", flush=True)
    os._exit(config.stash.get(EXIT_STATUS, 0) or 1)


class ServerProcess:
    """A real server a test starts as a subprocess (Redis, Prometheus) and kills when done."""

    proc: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class RecordingSink:
    """An AlertSink that keeps what it was told (the console sink prints the same)."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str, str]] = []

    async def notify(self, alert: Any, change: str) -> None:
        self.notes.append((alert.id, alert.series, change))


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    """The real Redis (DB 15); a failure to connect fails the test rather than skipping it."""
    client = connect(REDIS_URL)
    await client.ping()
    yield client
    await client.aclose()


@pytest.fixture
async def keys(redis: aioredis.Redis) -> AsyncIterator[Keys]:
    """A key prefix of this test's own, deleted afterwards."""
    keys = Keys(f"test-{uuid.uuid4().hex[:10]}")
    yield keys
    async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
        await redis.delete(key)


@pytest.fixture
async def record(tmp_path: Path) -> AsyncIterator[SqliteRecord]:
    rec = await SqliteRecord.open(tmp_path / "sigops.db")
    yield rec
    await rec.close()


@pytest.fixture
def queue(redis: aioredis.Redis, keys: Keys) -> RedisSignalQueue:
    return RedisSignalQueue(redis, keys, maxlen=100_000)


def make_processor(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys, **hysteresis: Any
) -> SignalProcessor:
    return SignalProcessor(
        record,
        RedisDetectorStateStore(redis, keys),
        Detection(EnsembleDetector(warmup=20), Hysteresis(**hysteresis)),
        AlertPolicy(),
    )


def make_worker(
    name: str, queue: RedisSignalQueue, processor: SignalProcessor, sink: Any, **config: Any
) -> Worker:
    options: dict[str, Any] = {"block_ms": 50, "reclaim_every_s": 0.0}
    options.update(config)
    return Worker(name, queue, processor, sink, WorkerConfig(**options))


async def drain(worker: Worker, max_steps: int = 1000) -> int:
    """Step a worker until the stream has nothing new for it; return entries processed."""
    total = 0
    idle = 0
    for _ in range(max_steps):
        outcome = await worker.step()
        if outcome is None:
            idle += 1
            if idle >= 2:
                return total
        else:
            idle = 0
            total += outcome.read
    raise AssertionError("worker did not drain the stream")
