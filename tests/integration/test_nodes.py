"""Three SigOps nodes on one Redis and one PostgreSQL, under load, losing the leader and a worker.

Real `sigops serve` processes, each with its own data directory and HTTP port, sharing the
record (SIGOPS_DATABASE_URL from the backend fixture) and the Redis prefix. Signals and
alerts go to all of them; the node holding the dispatcher lease is `kill -9`ed, then a
worker node. Afterwards: every signal recorded once, every alert recorded once, each alert
group posted to Slack once (the in-doubt post is found by its metadata), and a new leader
took over within the lease time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from storage.keys import Keys
from storage.redis_stream import connect
from storage.sqlite import SqliteRecord
from tests.conftest import REDIS_URL, free_port
from tests.fakes.slack_api import FakeSlack

pytestmark = [pytest.mark.redis, pytest.mark.postgres_only]
CHANNEL = "C0ALERTS"
TEAM_ALERTS = "SELECT count(*), count(DISTINCT group_key) FROM alerts WHERE service LIKE 'team%'"
LEASE_MS = 1500


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    yield fake
    await fake.stop()


class Node:
    def __init__(self, index: int, tmp_path: Path, prefix: str, slack: FakeSlack) -> None:
        self.port = free_port()
        data = tmp_path / f"node{index}"
        data.mkdir()
        env = {
            **os.environ,  # SIGOPS_DATABASE_URL: the shared PostgreSQL record
            "SIGOPS_REDIS_URL": REDIS_URL,
            "SIGOPS_REDIS_PREFIX": prefix,
            "SIGOPS_DATA_DIR": str(data),
            "SIGOPS_HTTP_PORT": str(self.port),
            "SIGOPS_LEASE_MS": str(LEASE_MS),
            "SIGOPS_RECLAIM_IDLE_MS": "2000",
            "SIGOPS_SHARDS": "6",
            "SIGOPS_DISPATCH_INTERVAL_S": "0.2",
            "SIGOPS_BRIEFS_ENABLED": "false",
            "SIGOPS_LOG_LEVEL": "INFO",
            "SIGOPS_SLACK_BOT_TOKEN": slack.token,
            "SIGOPS_SLACK_API_URL": slack.url,
            "SIGOPS_SLACK_CHANNELS": CHANNEL,
        }
        self.log = open(data / "serve.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve"],
            cwd=data,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def ready(session: aiohttp.ClientSession, node: Node, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{node.url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"node on {node.port} never became ready")


async def test_three_nodes_survive_losing_the_leader_and_a_worker(tmp_path: Path, slack: FakeSlack) -> None:
    prefix = f"test-nodes-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    redis = connect(REDIS_URL)
    nodes = [Node(i, tmp_path, prefix, slack) for i in range(3)]
    t0 = time.time() - 7200

    def team_posts() -> dict[str, int]:
        """Per team alert, how many channel messages name it (its own post, or a burst's digest;
        metric anomalies may post too, and are not counted)."""
        counts: dict[str, int] = {}
        for message in slack.messages(CHANNEL):
            text = message.text + str(message.blocks)
            for team in {f"team{i}Down" for i in range(alerts_sent)}:
                if team in text:
                    counts[team] = counts.get(team, 0) + 1
        return counts

    sent_ids: set[str] = set()
    alerts_sent = 0
    try:
        async with aiohttp.ClientSession() as session:
            for node in nodes:
                await ready(session, node)

            async def post(live: list[Node], batches: int, alerts: int) -> None:
                nonlocal alerts_sent
                for b in range(batches):
                    node = live[b % len(live)]
                    n = len(sent_ids)
                    body = [
                        {"id": f"s{n + i}", "series": f"svc{(n + i) % 9}.latency", "value": 100.0 + i % 5,
                         "ts": t0 + n + i}
                        for i in range(50)
                    ]  # fmt: skip
                    async with session.post(f"{node.url}/v1/signals", json=body) as response:
                        assert response.status == 202, await response.text()
                    sent_ids.update(r["id"] for r in body)
                for a in range(alerts):
                    service = f"team{alerts_sent}"
                    labels = {"service": service, "alertname": f"{service}Down"}
                    alert = {"series": f"{service}.Down", "kind": "alert", "severity": "critical",
                             "text": f"{service} is down", "labels": labels}  # fmt: skip
                    async with session.post(f"{live[a % len(live)].url}/v1/signals", json=alert) as response:
                        assert response.status == 202
                    alerts_sent += 1

            async def leader() -> Node | None:
                holder = await redis.get(keys.dispatcher_lease)
                pid = int(holder.decode().rsplit("-", 1)[1]) if holder else None
                return next((n for n in nodes if n.proc.pid == pid and n.proc.poll() is None), None)

            await post(nodes, 20, 3)
            deadline = time.monotonic() + 20
            while not team_posts():  # the leader is delivering
                assert time.monotonic() < deadline, "nothing was posted"
                await asyncio.sleep(0.2)
            first = await leader()
            assert first is not None, "nobody holds the dispatcher lease"
            first.kill()  # the leader, mid-load
            killed_at = time.monotonic()
            live = [n for n in nodes if n is not first]
            await post(live, 20, 3)
            while (second := await leader()) is None:
                assert time.monotonic() - killed_at < 3 * LEASE_MS / 1000 + 2, "no new leader"
                await asyncio.sleep(0.1)
            took_over_s = time.monotonic() - killed_at
            worker = next(n for n in live if n is not second)
            worker.kill()  # a worker node, with shards and maybe unacknowledged entries
            await post([second], 10, 2)

            record = await SqliteRecord.open(tmp_path / "sigops.db")  # the shared PostgreSQL record
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    signals = (await record.db.rows("SELECT count(*), count(DISTINCT id) FROM signals"))[0]
                    alerts = (await record.db.rows(TEAM_ALERTS))[0]
                    if (
                        signals[0] >= len(sent_ids) + alerts_sent
                        and alerts[0] >= alerts_sent
                        and len(team_posts()) >= alerts_sent
                    ):
                        break
                    await asyncio.sleep(0.5)
                await asyncio.sleep(3)  # anything doubled late would show now
                signals = (await record.db.rows("SELECT count(*), count(DISTINCT id) FROM signals"))[0]
                alerts = (await record.db.rows(TEAM_ALERTS))[0]
            finally:
                await record.close()
    finally:
        for node in nodes:  # all at once: each shuts down gracefully in parallel
            if node.proc.poll() is None:
                node.proc.terminate()
        stopping = time.monotonic()
        for node in nodes:
            node.stop()
        shutdown_s = time.monotonic() - stopping
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()

    total = len(sent_ids) + alerts_sent
    assert tuple(signals) == (total, total), (
        f"signals recorded {signals[0]} ({signals[1]} distinct) of {total}"
    )
    assert tuple(alerts) == (alerts_sent, alerts_sent), (
        f"alerts {alerts[0]} ({alerts[1]} groups) of {alerts_sent}"
    )
    posted = team_posts()
    assert len(posted) == alerts_sent, f"{len(posted)} of {alerts_sent} alert groups posted: {posted}"
    assert set(posted.values()) == {1}, f"an alert group posted more than once: {posted}"
    assert took_over_s < 3 * LEASE_MS / 1000 + 2
    print(
        f"nodes: new leader {took_over_s:.1f}s after the kill; "
        f"{total} signals, {alerts_sent} alerts, once each; shutdown took {shutdown_s:.1f}s"
    )
