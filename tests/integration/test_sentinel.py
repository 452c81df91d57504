"""A Sentinel failover under load, with real redis-server processes: nothing acknowledged is lost.

Three Redis servers (a master and two replicas) and one Sentinel, all started here on free
ports. Signals are published through SigOps' queue, which acknowledges a batch only once a
replica has it (WAIT); the master is killed with SIGKILL mid-stream; Sentinel promotes a
replica; the same client finds the new master by itself; publishing resumes. Every signal
that was acknowledged is then in the new master's streams.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from engine.errors import QueueUnavailable
from engine.signal import make_signal, signals_from_json
from storage.keys import Keys
from storage.redis_stream import RedisSignalQueue, connect_sentinel
from tests.conftest import ServerProcess, free_port

MASTER = "sigops-test"

pytestmark = pytest.mark.record_free  # Redis and Prometheus only: run once, not per backend


class RedisNode(ServerProcess):
    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), *args]
        )  # fmt: skip

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)


class SentinelNode(ServerProcess):
    def __init__(self, workdir: Path, master_port: int) -> None:
        self.port = free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 4000\n"
            f"sentinel parallel-syncs {MASTER} 2\n"
        )
        self.spawn(["redis-server", str(conf), "--sentinel"])


async def until(check: object, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if await check():  # type: ignore[operator]
                return
        except (OSError, aioredis.ConnectionError, aioredis.ResponseError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} within {within_s}s")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisNode, list[RedisNode], SentinelNode]]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed for this test (.ci/run installs it)")
    nodes: list[ServerProcess] = []
    try:
        (tmp_path / "m").mkdir()
        master = RedisNode(tmp_path / "m")
        nodes.append(master)
        replicas = []
        for name in ("r1", "r2"):
            (tmp_path / name).mkdir()
            replica = RedisNode(tmp_path / name, "--replicaof", "127.0.0.1", str(master.port))
            nodes.append(replica)
            replicas.append(replica)
        (tmp_path / "s").mkdir()
        sentinel = SentinelNode(tmp_path / "s", master.port)
        nodes.append(sentinel)
        yield master, replicas, sentinel
    finally:
        for node in nodes:
            node.stop()


async def test_a_failover_loses_no_acknowledged_signal(
    cluster: tuple[RedisNode, list[RedisNode], SentinelNode],
) -> None:
    master, replicas, sentinel = cluster
    probe = master.client()

    async def replicated() -> bool:
        info = await probe.info("replication")
        return int(info.get("connected_slaves", 0)) == 2

    await until(replicated, 20, "the replicas did not sync")
    sentinel_client = aioredis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=2)

    async def sentinel_knows() -> bool:
        return len(await sentinel_client.sentinel_slaves(MASTER)) == 2

    await until(sentinel_knows, 20, "Sentinel did not see both replicas")
    await probe.aclose()

    client = connect_sentinel([("127.0.0.1", sentinel.port)], MASTER, timeout_s=2.0)
    keys = Keys("{failover}")
    queue = RedisSignalQueue(client, keys, maxlen=1_000_000, shards=2, min_replicas=1, replica_timeout_ms=500)
    acknowledged: set[str] = set()
    refused = 0
    after_failover = 0
    killed_at: float | None = None
    resumed_after = 0.0
    t0 = time.time()
    deadline = time.monotonic() + 60
    batch = 0
    while after_failover < 30 and time.monotonic() < deadline:
        signals = [
            make_signal(series=f"svc{i % 4}.latency", value=float(batch * 10 + i), ts=t0 + batch + i / 100)
            for i in range(10)
        ]
        try:
            await queue.publish(signals, time.time())
        except QueueUnavailable:
            refused += 1  # not acknowledged: the sender resends the same batch
            await asyncio.sleep(0.1)
            continue
        acknowledged.update(s.id for s in signals)
        batch += 1
        if killed_at is not None:
            if after_failover == 0:
                resumed_after = time.monotonic() - killed_at
            after_failover += 1
        if batch == 30 and killed_at is None:
            master.stop()  # SIGKILL mid-stream
            killed_at = time.monotonic()
        await asyncio.sleep(0.01)
    assert killed_at is not None and after_failover == 30, f"publishing did not resume ({refused} refused)"

    found: set[str] = set()
    for shard in range(2):
        for _, fields in await client.xrange(keys.stream(shard)):
            found.update(s.id for s in signals_from_json(fields[b"b"]))
    lost = acknowledged - found
    print(
        f"failover: publishing resumed {resumed_after:.1f}s after the kill, "
        f"{refused} batches refused meanwhile"
    )
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged signals lost in the failover"
    address = await client.connection_pool.get_master_address()  # type: ignore[attr-defined]
    assert address[1] in {r.port for r in replicas}  # a replica is the master now
    await client.aclose()
    await sentinel_client.aclose()


def test_a_braced_prefix_puts_every_key_in_one_cluster_slot() -> None:
    """Several keys in one operation (XREADGROUP over the shard streams, the lease scripts) must
    share a slot in a Redis Cluster: with SIGOPS_REDIS_PREFIX={sigops} they all do."""
    from redis.crc import key_slot

    keys = Keys("{sigops}")
    names = [keys.stream(s) for s in range(8)] + [keys.lease(s) for s in range(8)]
    names += [keys.dispatcher_lease, keys.brief_claim("telegram:1", 0), keys.brief_sent, keys.workers]
    names += [keys.dead_letters, keys.detector_state, keys.pull_cursors]
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert len({key_slot(n.encode()) for n in (Keys("sigops").stream(0), Keys("sigops").stream(1))}) == 2
