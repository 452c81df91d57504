"""Ingest benchmark on the real Redis: raw XADD, HTTP ingest, and end to end into the record.

    .venv/bin/python bench/ingest.py [--signals 200000] [--concurrency 4] [--workers 1] [--rate 10000]
        [--repeat 3] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

With --database-url the record is on that PostgreSQL server (in a database of the
benchmark's own, dropped afterwards) instead of a SQLite file. When Debian's
`prometheus-alertmanager` is installed, the same client first posts the same number of
alerts to a real Alertmanager in the same batches, and the ratio is printed.

Starts `sigops serve --workers 0` (HTTP only) and `sigops worker` processes against
Redis at 127.0.0.1:6379 (DB 14, a key prefix of its own, deleted afterwards). Phases:
raw XADD from Python (one signal per entry, and 100 per entry as SigOps writes them);
a burst in batches of 1000 and one in batches of 100 (HTTP rate, end-to-end rate into
SQLite, latency under backlog); then a paced load below saturation for the latency a
signal sees when the system keeps up. Latency is ingest-to-recorded: the time from
the HTTP request being accepted to the worker's commit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis

from bot.settings import Settings
from engine import COMPILED_VALIDATION  # serve and the workers import the same build
from engine.detection import COMPILED, COMPILED_EPISODES
from storage.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/14"
T0 = 1_795_000_000


def bodies(total: int, batch: int, offset: int = 0) -> list[bytes]:
    """Pre-serialised request bodies: 100 series, distinct timestamps, so every id is new."""
    out = []
    for start in range(offset, offset + total, batch):
        records = [
            {
                "series": f"svc{i % 10}.metric{i % 100}",
                "value": float(i % 97),
                "ts": T0 + i * 0.001,
                "labels": {"service": f"svc{i % 10}", "env": "prod"},
            }
            for i in range(start, min(start + batch, offset + total))
        ]
        out.append(orjson.dumps(records))
    return out


async def raw_xadd(total: int, batch: int, per_entry: int) -> float:
    """Signals/s for bare pipelined XADD from Python, `per_entry` signals in each entry."""
    client = aioredis.Redis.from_url(REDIS_URL)
    key = f"bench-raw-{uuid.uuid4().hex[:8]}"
    one = orjson.dumps(
        ["0123456789abcdef01234567", T0, "api", "metric", "svc1.metric1", 1.0, {"service": "svc1"}]
    )
    payload = b"[" + b",".join([one] * per_entry) + b"]"
    started = time.perf_counter()
    for _ in range(0, total, batch):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(batch // per_entry):
                pipe.xadd(key, {b"b": payload, b"r": b"0"}, maxlen=1_000_000, approximate=True)
            await pipe.execute()
    elapsed = time.perf_counter() - started
    await client.delete(key)
    await client.aclose()
    return total / elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )


def bench_env(name: str, log_level: str) -> tuple[Path, str, int, dict[str, str]]:
    """A data directory, Redis key prefix and port of the benchmark's own, and the
    environment for its SigOps processes (none of the caller's SIGOPS_ settings)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"sigops-{name}-"))
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIGOPS_")},
        "SIGOPS_REDIS_URL": REDIS_URL,
        "SIGOPS_REDIS_PREFIX": prefix,
        "SIGOPS_DATA_DIR": str(data_dir),
        "SIGOPS_HTTP_PORT": str(port),
        "SIGOPS_LOG_LEVEL": log_level,
    }
    return data_dir, prefix, port, env


async def shards_shared(prefix: str, workers: int) -> None:
    """Wait until every shard has an owner and the workers hold an even share (a worker
    that starts first takes them all and gives extras back at its next rebalance, a third
    of a lease later): otherwise the first burst measures one worker, whatever --workers."""
    client = aioredis.Redis.from_url(REDIS_URL)
    keys, shards = Keys(prefix), Settings.model_fields["shards"].default  # the processes' defaults
    fair = -(-shards // max(workers, 1))
    deadline = time.perf_counter() + 60
    try:
        while time.perf_counter() < deadline:
            owners = [await client.get(keys.lease(shard)) for shard in range(shards)]
            held = [owners.count(owner) for owner in set(owners)]
            if None not in owners and len(held) == workers and max(held) <= fair:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the {workers} workers did not share the {shards} shards out within 60 s")
    finally:
        await client.aclose()


async def stop_and_clean(procs: list[subprocess.Popen[bytes]], prefix: str, data_dir: Path) -> None:
    """Stop the benchmark's processes, delete its Redis keys and its data directory."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)
    client = aioredis.Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"{prefix}:*"):
        await client.delete(key)
    await client.aclose()
    shutil.rmtree(data_dir, ignore_errors=True)


async def wait_ready(url: str, path: str = "/readyz", what: str = "server") -> None:
    """Poll `url + path` until it answers 200 (30 s at most)."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}{path}") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready")


async def post_all(
    url: str, payloads: list[bytes], concurrency: int, path: str = "/v1/signals", ok: int = 202
) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in payloads:
        queue.put_nowait(body)

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(
                f"{url}{path}", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status != ok:
                    raise RuntimeError(f"ingest answered {response.status}: {await response.text()}")

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    return time.perf_counter() - started


class Record:
    """Reads the benchmark's record: the SQLite file, or the PostgreSQL database."""

    def __init__(self, db: Path, url: str | None) -> None:
        self.db, self.url = db, url

    async def recorded(self) -> int:
        if self.url is not None:
            conn = await asyncpg.connect(self.url)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM signals"))
            except asyncpg.UndefinedTableError:
                return 0
            finally:
                await conn.close()
        if not self.db.exists():
            return 0
        try:
            with sqlite3.connect(self.db, timeout=5) as conn:
                return int(conn.execute("SELECT count(*) FROM signals").fetchone()[0])
        except sqlite3.OperationalError:
            return 0

    async def latencies(self, since: float) -> list[float]:
        sql = "SELECT recorded_at - received_at FROM signals WHERE received_at >= "
        if self.url is not None:
            conn = await asyncpg.connect(self.url)
            try:
                return [r[0] for r in await conn.fetch(sql + "$1", since)]
            finally:
                await conn.close()
        with sqlite3.connect(self.db) as conn:
            return [row[0] for row in conn.execute(sql + "?", (since,))]


async def alertmanager_rate(count: int, batch: int, concurrency: int) -> float | None:
    """Alerts/s a real Alertmanager accepts on /api/v2/alerts from the same client (None: not installed)."""
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        return None
    workdir = Path(tempfile.mkdtemp(prefix="sigops-bench-am-"))
    (workdir / "am.yml").write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'am.yml'}", f"--storage.path={workdir}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, "/-/ready", "Alertmanager")
        payloads = [
            orjson.dumps([
                {"labels": {"alertname": "BenchAlert", "series": f"svc{(start + i) % 50}.latency",
                            "instance": f"host-{start + i}"},
                 "annotations": {"summary": "benchmark"}}
                for i in range(min(batch, count - start))
            ])
            for start in range(0, count, batch)
        ]  # fmt: skip
        seconds = await post_all(url, payloads, concurrency, path="/api/v2/alerts", ok=200)
        return count / seconds
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


async def paced(url: str, rate: int, seconds: float, batch: int, offset: int) -> tuple[int, float]:
    """Post `rate` signals/s for `seconds` in batches of `batch`; return (signals, achieved rate)."""
    payloads = bodies(int(rate * seconds), batch, offset)
    interval = batch / rate
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for index, body in enumerate(payloads):
            delay = started + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            async with session.post(
                f"{url}/v1/signals", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"ingest answered {response.status}")
    total = len(payloads) * batch
    return total, total / (time.perf_counter() - started)


async def burst(
    url: str, db: Record, label: str, count: int, batch: int, concurrency: int, offset: int,
    alertmanager: float | None = None,
) -> tuple[float, float]:  # fmt: skip
    payloads = bodies(count, batch, offset)
    already = await db.recorded()
    since = time.time()
    started = time.perf_counter()
    http_s = await post_all(url, payloads, concurrency)
    while (done := await db.recorded()) < already + count:
        if time.perf_counter() - started > 600:
            raise RuntimeError(f"only {done - already} of {count} recorded after 600 s")
        await asyncio.sleep(0.05)
    total_s = time.perf_counter() - started
    lat = await db.latencies(since)
    versus = ""
    if alertmanager:
        versus = (
            f" (Alertmanager {alertmanager:,.0f} alerts/s: HTTP {count / http_s / alertmanager:.2f}x, "
            f"end to end {count / total_s / alertmanager:.2f}x)"
        )
    print(
        f"{label}: HTTP {count / http_s:,.0f} signals/s; end to end {count / total_s:,.0f} signals/s; "
        f"latency under backlog p50 {pct(lat, 0.5) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms{versus}"
    )
    return count / http_s, count / total_s


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def rounds_of_100(
    url: str, db: Record, args: argparse.Namespace, offset: int, alertmanager: float | None
) -> int:
    """Bursts in batches of 100: the first against the Alertmanager rate measured at start,
    then `--repeat` - 1 more, each right after a fresh Alertmanager run; the median ratio.
    Returns the signal offset after them."""
    count = args.signals // 2
    rounds = [
        (
            alertmanager,
            *await burst(
                url, db, "burst, batches of 100 ", count, 100, args.concurrency, offset, alertmanager
            ),
        )
    ]
    offset += count
    for _ in range(args.repeat - 1):
        again = await alertmanager_rate(count, 100, args.concurrency)
        rounds.append(
            (
                again,
                *await burst(url, db, "again, batches of 100 ", count, 100, args.concurrency, offset, again),
            )
        )
        offset += count
    if len(rounds) > 1 and all(am for am, _, _ in rounds):
        http = statistics.median(h / am for am, h, _ in rounds if am)
        e2e = statistics.median(e / am for am, _, e in rounds if am)
        print(
            f"median of {len(rounds)} rounds at batches of 100: HTTP {http:.2f}x Alertmanager, "
            f"end to end {e2e:.2f}x"
        )
    return offset


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--signals", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=10_000, help="signals/s in the paced phase")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="rounds of Alertmanager then SigOps at batches of 100, for the median ratio "
        "(single runs here vary by ~20%%)",
    )  # fmt: skip
    parser.add_argument(
        "--database-url", help="a PostgreSQL server (its maintenance database) for the record"
    )
    args = parser.parse_args()

    print(
        f"machine: {os.cpu_count()} cores; burst of {args.signals} signals, {args.workers} worker process(es)"
        f" (compiled: detector {'yes' if COMPILED else 'no'},"
        f" episodes {'yes' if COMPILED_EPISODES else 'no'},"
        f" validation {'yes' if COMPILED_VALIDATION else 'no'})"
    )
    raw_one = await raw_xadd(100_000, 1000, 1)
    raw_chunk = await raw_xadd(args.signals, 1000, 100)
    print(f"raw XADD from Python, 1 signal per entry:    {raw_one:>10,.0f} signals/s")
    print(f"raw XADD from Python, 100 signals per entry: {raw_chunk:>10,.0f} signals/s")
    am_1000 = await alertmanager_rate(args.signals, 1000, args.concurrency)
    am_100 = await alertmanager_rate(args.signals // 2, 100, args.concurrency)
    if am_100 is not None and am_1000 is not None:
        print(f"Alertmanager /api/v2/alerts, same client: {am_1000:,.0f} alerts/s in batches of 1000, "
              f"{am_100:,.0f} in batches of 100")  # fmt: skip
    else:
        print("Alertmanager comparison skipped: prometheus-alertmanager is not installed")

    data_dir, prefix, port, env = bench_env("bench", "WARNING")
    database: str | None = None
    if args.database_url:
        database = f"sigops_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(args.database_url)
        await admin.execute(f'CREATE DATABASE "{database}"')
        await admin.close()
        env["SIGOPS_DATABASE_URL"] = args.database_url.rsplit("/", 1)[0] + f"/{database}"
    db = Record(data_dir / "sigops.db", env.get("SIGOPS_DATABASE_URL"))
    print(f"record: {'PostgreSQL' if database else 'SQLite'}")
    url = f"http://127.0.0.1:{port}"
    server = start(["serve", "--workers", "0"], env)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await wait_ready(url)
        workers = [start(["worker"], env) for _ in range(args.workers)]
        await shards_shared(prefix, args.workers)
        offset = 0
        await burst(url, db, "burst, batches of 1000", args.signals, 1000, args.concurrency, offset, am_1000)
        offset += args.signals
        offset = await rounds_of_100(url, db, args, offset, am_100)
        since = time.time()
        sent, achieved = await paced(url, args.rate, 10.0, 100, offset)
        deadline = time.perf_counter() + 60
        while await db.recorded() < offset + sent and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        lat = await db.latencies(since)
        print(
            f"paced at {achieved:,.0f} signals/s in batches of 100 for 10 s: latency p50 "
            f"{pct(lat, 0.5) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
        )
        print(
            f"peak memory: HTTP server {peak_rss_mb(server.pid):.0f} MiB, "
            + ", ".join(f"worker {peak_rss_mb(w.pid):.0f} MiB" for w in workers)
        )
    finally:
        await stop_and_clean([server, *workers], prefix, data_dir)
        if database and args.database_url:
            admin = await asyncpg.connect(args.database_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
