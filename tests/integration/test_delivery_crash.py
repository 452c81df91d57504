"""A real `sigops serve` killed with SIGKILL mid-delivery: after a restart every alert is delivered once.

The process kills itself at a named crash point (`SIGOPS_FAILPOINT`), the closest a test
gets to pulling the plug at an exact step:
- `dispatch:after-outbox`: the delivery is written to the outbox, nothing is sent yet;
- `deliver:after-send`: the chat took the message, the outbox does not know yet.
The fake chat servers live in the test process and outlive the killed SigOps.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from storage.keys import Keys
from storage.sqlite import SqliteRecord
from tests.conftest import REDIS_URL, free_port
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

CHAT = -2002
CHANNEL = "C0ALERTS"

pytestmark = pytest.mark.redis


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeSlack]]:
    telegram = await FakeTelegram().start()
    slack = await FakeSlack().start()
    yield telegram, slack
    await telegram.stop()
    await slack.stop()


def serve(
    tmp_path: Path,
    port: int,
    platform: str,
    fakes: tuple[FakeTelegram, FakeSlack],
    failpoint: str | None,
    prefix: str,
) -> subprocess.Popen[bytes]:
    telegram, slack = fakes
    env = {
        **os.environ,
        "SIGOPS_REDIS_URL": REDIS_URL,
        "SIGOPS_REDIS_PREFIX": prefix,
        "SIGOPS_DATA_DIR": str(tmp_path / "data"),
        "SIGOPS_HTTP_PORT": str(port),
        "SIGOPS_LEASE_MS": "1000",
        "SIGOPS_DISPATCH_INTERVAL_S": "0.2",
        "SIGOPS_BRIEFS_ENABLED": "false",  # a morning brief would be one more message here
        "SIGOPS_LOG_LEVEL": "INFO",
    }
    if platform == "telegram":
        env |= {
            "SIGOPS_TELEGRAM_TOKEN": telegram.token,
            "SIGOPS_TELEGRAM_API_URL": telegram.url,
            "SIGOPS_TELEGRAM_CHAT_IDS": str(CHAT),
        }
    else:
        env |= {
            "SIGOPS_SLACK_BOT_TOKEN": slack.token,
            "SIGOPS_SLACK_API_URL": slack.url,
            "SIGOPS_SLACK_CHANNELS": CHANNEL,
        }
    if failpoint:
        env["SIGOPS_FAILPOINT"] = failpoint
    log = open(tmp_path / f"serve-{failpoint or 'restart'}.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def post_alert(port: int, name: str) -> None:
    body = {
        "series": f"{name}.down",
        "kind": "alert",
        "severity": "critical",
        "text": f"{name} is down",
        "labels": {"service": name, "alertname": f"{name}Down"},
    }
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.post(f"http://127.0.0.1:{port}/v1/signals", json=body) as response:
                    assert response.status == 202, await response.text()
                    return
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def wait_for(statuses: list[str], tmp_path: Path, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while [s for s, _ in await outbox(tmp_path)] != statuses:
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


async def outbox(tmp_path: Path) -> list[tuple[str, str]]:
    """The outbox as the processes left it (the SQLite file, or the PostgreSQL database)."""
    record = await SqliteRecord.open(tmp_path / "data" / "sigops.db")
    try:
        rows = await record.db.rows("SELECT status, coalesce(error, '') FROM deliveries ORDER BY id")
    finally:
        await record.close()
    return [(r[0], r[1]) for r in rows]


async def cleanup(prefix: str) -> None:
    from storage.redis_stream import connect

    client = connect(REDIS_URL)
    async for key in client.scan_iter(match=f"{Keys(prefix).prefix}:*"):
        await client.delete(key)
    await client.aclose()


@pytest.mark.parametrize("platform", ["telegram", "slack"])
@pytest.mark.parametrize("failpoint", ["dispatch:after-outbox", "deliver:after-send"])
async def test_killed_mid_delivery_then_restarted_delivers_every_alert(
    tmp_path: Path, fakes: tuple[FakeTelegram, FakeSlack], platform: str, failpoint: str
) -> None:
    telegram, slack = fakes
    prefix = f"crash-{os.getpid()}-{time.monotonic_ns()}"
    port = free_port()

    def delivered() -> int:
        return len(telegram.chat(CHAT)) if platform == "telegram" else len(slack.messages(CHANNEL))

    first = serve(tmp_path, port, platform, fakes, failpoint, prefix)
    try:
        await post_alert(port, "checkout")
        returncode = await asyncio.to_thread(first.wait, 30)
        assert returncode == -9, "SigOps should have died at the crash point"
        before = delivered()
        assert before == (1 if failpoint == "deliver:after-send" else 0)
        assert [s for s, _ in await outbox(tmp_path)] == (["sending"] if before else ["pending"])

        second = serve(tmp_path, port, platform, fakes, None, prefix)
        try:
            await wait_for(["sent"], tmp_path)
            await post_alert(port, "payments")  # and it carries on with new alerts
            await wait_for(["sent", "sent"], tmp_path)
        finally:
            second.terminate()
            await asyncio.to_thread(second.wait, 20)
    finally:
        if first.poll() is None:
            first.kill()
        await cleanup(prefix)

    if platform == "slack" or failpoint == "dispatch:after-outbox":
        # Nothing was sent before the crash, or Slack found its own post by metadata: no duplicate.
        assert delivered() == 2
        if platform == "slack" and failpoint == "deliver:after-send":
            assert len(slack.method_calls("conversations.history")) == 1
            assert slack.messages(CHANNEL)[0].edits == 1  # the found post was brought up to date
    else:
        # Telegram's Bot API cannot say what a chat already holds: the unconfirmed post went out again.
        texts = [m.text for m in telegram.chat(CHAT)]
        assert len(texts) == 3 and texts[0] == texts[1] and "checkout" in texts[0] and "payments" in texts[2]
