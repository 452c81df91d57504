"""Alert latency: from a signal entering `POST /v1/signals` to the chat API receiving the message.

    .venv/bin/python bench/alerts.py [--alerts 200] [--chats 20] [--interval 0.1]

Starts `sigops serve` (one worker) against Redis at 127.0.0.1:6379 (DB 14, a key
prefix of its own, deleted afterwards) and a fake Telegram Bot API in this process,
which timestamps each `sendMessage` as it arrives. Each alert is a critical alert
signal (no group wait) of its own series, routed by a `team` label to one of
`--chats` chats so that Telegram's one-message-a-second per chat is not what is
measured. Prints p50 / p90 / p99 / max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import wait_ready  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"


def routing_file(path: Path, chats: int) -> Path:
    lines = ["receivers:"]
    lines += [f"  - {{name: team{k}, telegram: [{-1000 - k}]}}" for k in range(chats)]
    lines += ["route:", "  receiver: team0", "  group_by: [series]", "  group_wait: 30s", "  routes:"]
    lines += [f"    - {{matchers: ['team=\"t{k}\"'], receiver: team{k}}}" for k in range(chats)]
    path.write_text("\n".join(lines) + "\n")
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between alerts")
    args = parser.parse_args()

    telegram = await FakeTelegram(per_chat_interval_s=1.0).start()
    arrived = stamp_arrivals(telegram)
    prefix = f"bench-alerts-{uuid.uuid4().hex[:8]}"
    port = 18000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as tmp:
        env = serve_env(telegram, prefix, port, Path(tmp), args.chats)
        server = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], cwd=tmp, env=env)
        try:
            await wait_ready(f"http://127.0.0.1:{port}")
            await asyncio.sleep(1.0)  # let the worker take its shards and the dispatcher its lease
            sent = await post_alerts(port, args.alerts, args.chats, args.interval)
            deadline = time.perf_counter() + 30
            while len(arrived) < args.alerts and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
        finally:
            server.terminate()
            await asyncio.to_thread(server.wait, 20)  # the fake Bot API must keep answering meanwhile
            await telegram.stop()
            await forget_prefix(prefix)
    report(sent, arrived, telegram.rate_limited)


def stamp_arrivals(telegram: FakeTelegram) -> dict[str, float]:
    """When each bench alert's name first reached the fake Bot API."""
    arrived: dict[str, float] = {}
    original = telegram._new_message

    def stamp(params, text, photo):  # type: ignore[no-untyped-def]
        result = original(params, text, photo)
        for name in re.findall(r"bench-\d{5}\.down", text):
            arrived.setdefault(name, time.perf_counter())
        return result

    telegram._new_message = stamp  # type: ignore[method-assign]
    return arrived


def serve_env(telegram: FakeTelegram, prefix: str, port: int, tmp: Path, chats: int) -> dict[str, str]:
    return {
        **os.environ,
        "SIGOPS_REDIS_URL": REDIS_URL,
        "SIGOPS_REDIS_PREFIX": prefix,
        "SIGOPS_DATA_DIR": str(tmp),
        "SIGOPS_HTTP_PORT": str(port),
        "SIGOPS_TELEGRAM_TOKEN": telegram.token,
        "SIGOPS_TELEGRAM_API_URL": telegram.url,
        "SIGOPS_ROUTING_FILE": str(routing_file(tmp / "routing.yaml", chats)),
        "SIGOPS_BRIEFS_ENABLED": "false",  # a morning brief would be one more message here
        "SIGOPS_LOG_LEVEL": "WARNING",
    }


async def post_alerts(port: int, count: int, chats: int, interval: float) -> dict[str, float]:
    """POST `count` critical alerts, one every `interval` s; return when each was sent."""
    sent: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            name = f"bench-{i:05d}"
            body = {
                "series": f"{name}.down",
                "kind": "alert",
                "severity": "critical",
                "text": f"{name} is down",
                "labels": {"team": f"t{i % chats}", "service": name},
            }
            sent[f"{name}.down"] = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/v1/signals", json=body) as response:
                assert response.status == 202, await response.text()
            await asyncio.sleep(interval)
    return sent


async def forget_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"{prefix}:*"):
        await client.delete(key)
    await client.aclose()


def report(sent: dict[str, float], arrived: dict[str, float], rate_limited: int) -> None:
    latencies = sorted((arrived[k] - sent[k]) * 1000 for k in sent if k in arrived)
    lost = len(sent) - len(latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(f"alerts: {len(sent)} sent, {len(latencies)} received, {lost} missing, 429s: {rate_limited}")
    print(
        f"POST /v1/signals -> chat API: p50 {pct(0.5):.0f} ms, p90 {pct(0.9):.0f} ms, "
        f"p99 {pct(0.99):.0f} ms, max {latencies[-1]:.0f} ms, mean {statistics.mean(latencies):.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
