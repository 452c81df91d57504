"""A PostgreSQL server killed mid-load and started again: an outage like Redis's, nothing lost.

The test runs its own PostgreSQL (initdb in a temporary directory, as the `postgres` user)
so it can `kill -9` it without touching the machine's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot.app import Runtime, open_runtime, start_http, start_workers
from bot.settings import Settings
from tests.conftest import REDIS_URL, free_port

pytestmark = [pytest.mark.redis, pytest.mark.record_free]  # it brings its own PostgreSQL
BIN = Path("/usr/lib/postgresql/15/bin")


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sigops-pg-", dir="/tmp"))
        shutil.chown(self.dir, "postgres")
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [str(BIN / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres"],
            check=True, user="postgres", capture_output=True, timeout=60,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/sigops"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             "-c", "fsync=off"],
            user="postgres", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # SIGKILL to the postmaster: no shutdown, no checkpoint
            self.proc.wait(timeout=10)
            self.proc = None

    async def wait_ready(self, within_s: float = 30) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(self.url.rsplit("/", 1)[0] + "/postgres", timeout=2)
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.2)
                continue
            await conn.close()
            return
        raise AssertionError("the throwaway PostgreSQL did not start")


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    if not (BIN / "postgres").exists() or os.geteuid() != 0:
        pytest.fail(f"PostgreSQL 15's binaries in {BIN} (and root, to run them as postgres) are needed")
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.kill()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
async def sigops(postgres: ThrowawayPostgres, tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    await postgres.wait_ready()
    admin = await asyncpg.connect(postgres.url.rsplit("/", 1)[0] + "/postgres")
    await admin.execute("CREATE DATABASE sigops")
    await admin.close()
    prefix = f"test-pg-outage-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=REDIS_URL, redis_prefix=prefix, data_dir=tmp_path, database_url=postgres.url,
        briefs_enabled=False,
    )  # type: ignore[call-arg]  # fmt: skip
    rt = await open_runtime(settings)
    stop = asyncio.Event()
    start_workers(rt, stop, 1)
    port = await start_http(rt, "127.0.0.1", 0)
    yield rt, f"http://127.0.0.1:{port}"
    stop.set()
    await asyncio.wait(rt.tasks, timeout=15)
    async for key in rt.redis.scan_iter(match=f"{prefix}:*"):
        await rt.redis.delete(key)
    await rt.close()


async def test_postgres_killed_mid_load_loses_nothing_and_everything_resumes(
    sigops: tuple[Runtime, str], postgres: ThrowawayPostgres
) -> None:
    rt, base = sigops
    t0 = time.time() - 3600
    sent = 0

    async def post(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal sent
        body = [
            {"series": f"svc{i % 3}.latency", "value": 100 + i % 7, "ts": t0 + sent + i} for i in range(n)
        ]
        async with session.post(f"{base}/v1/signals", json=body) as response:
            assert response.status == 202, await response.text()  # the stream takes them: Redis is up
        sent += n

    async def recorded() -> int:
        try:
            return await rt.record.count("signals")
        except Exception:
            return -1

    async def until_recorded(total: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while await recorded() != total:
            assert time.monotonic() < deadline, f"{await recorded()} of {total} recorded"
            await asyncio.sleep(0.2)

    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            await post(session, 50)
        await until_recorded(250, 20)

        postgres.kill()
        for _ in range(5):  # ingest goes on taking signals while the record is down
            await post(session, 50)
            await asyncio.sleep(0.2)
        async with session.get(f"{base}/readyz") as response:
            ready = await response.json()
        assert response.status == 503 and ready["postgres"] == "unavailable" and ready["redis"] == "ok", ready
        assert rt.supervisor.problems() == {}, "a worker loop died instead of waiting"

        postgres.start()  # crash recovery on the same data directory
        await until_recorded(500, 60)
        for _ in range(2):
            await post(session, 50)
        await until_recorded(600, 20)
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200, await response.text()
    rows = await rt.record.db.rows("SELECT count(DISTINCT id) FROM signals")
    assert rows[0][0] == 600  # each once: nothing lost, nothing doubled
