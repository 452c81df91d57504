"""Hostile HTTP at every endpoint of a real `serve` runtime: never a 5xx, and healthy afterwards.

Bodies are generated (random bytes, odd JSON, near-valid signals and webhooks), sent with
random content types, encodings and headers, with the right token, secret and Slack
signature so the requests get past authentication into the parsers. Bounded: a fixed
number of requests from a fixed seed, all to 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import random
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from bot.app import Runtime, open_runtime, start_http
from bot.settings import Settings
from tests.conftest import FIXTURES, REDIS_URL
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "ingest-token-for-fuzzing"
TG_SECRET = "telegram-webhook-secret"
SLACK_SECRET = "slack-signing-secret"
# The suite sends 1500 from a fixed seed; a longer run: SIGOPS_FUZZ_REQUESTS=10000 SIGOPS_FUZZ_SEED=7.
REQUESTS = int(os.environ.get("SIGOPS_FUZZ_REQUESTS", "1500"))
SEED = int(os.environ.get("SIGOPS_FUZZ_SEED", "20261201"))

ENDPOINTS = [
    "/v1/signals",
    "/v1/webhooks/alertmanager",
    "/v1/webhooks/grafana",
    "/v1/changes",
    "/telegram/webhook",
    "/slack/events",
]
CONTENT_TYPES = [
    "application/json",
    "application/x-ndjson",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=latin-1",
    "",
]
ENCODINGS = [
    "",
    "",
    "",
    "gzip",
    "gzip-garbage",
    "deflate",
    "deflate-garbage",
    "br",
    "zstd",
    "identity",
    "x-bogus",
]
WEIRD = [
    None, True, -1, 0, 1e308, -1e300, "", "x" * 10_000, "\u0000", "\ud83d", "💥", [], {}, [[[]]],
    {"a": {"b": {"c": []}}}, "2026-13-45T99:99:99Z", "NaN", 1.5e-320, 2**70,
]  # fmt: skip


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    telegram = await FakeTelegram().start()
    slack = await FakeSlack().start()
    prefix = f"test-fuzz-{os.getpid()}"
    settings = Settings(
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        data_dir=tmp_path,
        ingest_token=TOKEN,
        telegram_token=telegram.token,
        telegram_api_url=telegram.url,
        telegram_chat_ids=[-1001],
        telegram_webhook_url="https://sigops.invalid/telegram/webhook",
        telegram_webhook_secret=TG_SECRET,
        slack_bot_token=slack.token,
        slack_api_url=slack.url,
        slack_signing_secret=SLACK_SECRET,
        slack_channels=["C0ALERTS"],
        briefs_enabled=False,
    )  # type: ignore[call-arg]
    rt = await open_runtime(settings)
    port = await start_http(rt, "127.0.0.1", 0)
    yield rt, f"http://127.0.0.1:{port}"
    await rt.close()
    await telegram.stop()
    await slack.stop()
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


def odd_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice(WEIRD)
    if roll < 0.7:
        return [odd_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["series", "value", "ts", "kind", "labels", "text", "severity", "id", "alerts", "status",
            "update_id", "message", "callback_query", "type", "payload", "command", "event"]  # fmt: skip
    return {rng.choice(keys): odd_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def near_valid(rng: random.Random, path: str) -> Any:
    """A body shaped like the real thing, with one or two fields made hostile."""
    if path == "/v1/webhooks/alertmanager":
        body = orjson.loads((FIXTURES / "alertmanager/firing.json").read_bytes())
        target = rng.choice([body, body["alerts"][0], body["alerts"][0]["labels"]])
        target[rng.choice(list(target))] = rng.choice(WEIRD)
        return body
    if path == "/telegram/webhook":
        return {"update_id": rng.choice([1, "1", None, -5]), "message": odd_json(rng)}
    record = {"series": "pay.latency", "value": 1.0, "ts": time.time(), "labels": {"service": "pay"}}
    record[rng.choice(list(record) + ["kind", "severity", "text"])] = rng.choice(WEIRD)
    return [record] * rng.randint(1, 3)


def body_for(rng: random.Random, path: str) -> bytes:
    roll = rng.random()
    if roll < 0.2:
        return rng.randbytes(rng.randint(0, 300))
    if roll < 0.35 and path == "/slack/events":
        fields = {
            rng.choice(["payload", "command", "text", "channel_id", "user_id", "ssl_check"]): str(
                odd_json(rng)
            )
        }
        fields["payload"] = dump(odd_json(rng)).decode() if rng.random() < 0.5 else "{not json"
        # A lone surrogate goes out as its bytes: the server must cope with undecodable text.
        quoted = (quote(v.encode("utf-8", "surrogatepass")) for v in fields.values())
        return "&".join(f"{k}={q}" for k, q in zip(fields, quoted, strict=True)).encode()
    return dump(near_valid(rng, path) if roll < 0.65 else odd_json(rng))


def dump(data: Any) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # a lone surrogate or an integer beyond 64 bits: Python's json writes them
        return json.dumps(data).encode()


def encode(rng: random.Random, body: bytes) -> tuple[bytes, str]:
    encoding = rng.choice(ENCODINGS)
    if encoding == "gzip":
        return gzip.compress(body), "gzip"
    if encoding == "deflate":
        return zlib.compress(body), "deflate"
    if encoding.endswith("-garbage"):
        return rng.randbytes(40), encoding.removesuffix("-garbage")
    return body, encoding


def headers_for(
    rng: random.Random, path: str, body: bytes, content_type: str, encoding: str
) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type
    if encoding:
        headers["Content-Encoding"] = encoding
    if path == "/telegram/webhook":
        headers["X-Telegram-Bot-Api-Secret-Token"] = TG_SECRET
    if path == "/slack/events":
        ts = str(int(time.time()))
        mac = hmac.new(SLACK_SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
        headers.update({"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={mac}"})
    if rng.random() < 0.1:
        headers["X-Slack-Request-Timestamp"] = rng.choice(["", "abc", "-1", "99999999999999999999"])
    return headers


async def test_fuzzed_requests_never_get_a_5xx_and_the_server_stays_healthy(
    served: tuple[Runtime, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, base = served
    rng = random.Random(SEED)
    statuses: dict[int, int] = {}
    server_errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=10)
    # A fresh connection per request: a dropped one is then that request's own failure.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False, connector=connector) as session:
        for _ in range(REQUESTS):
            path = rng.choice(ENDPOINTS)
            content_type = rng.choice(CONTENT_TYPES)
            body = body_for(rng, path)
            wire, encoding = encode(rng, body)
            # Slack signs the bytes as sent.
            headers = headers_for(rng, path, wire, content_type, encoding)
            try:
                async with session.post(base + path, data=wire, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    if response.status >= 500:
                        server_errors.append(
                            f"{response.status} {path} {content_type!r} {encoding!r} {body[:120]!r}"
                        )
            except aiohttp.ClientError as exc:  # a dropped connection is as bad as a 500
                server_errors.append(f"dropped: {path} {content_type!r} {encoding!r}: {exc!r}")
        async with session.get(base + "/healthz") as health:
            assert health.status == 200
        async with session.get(base + "/readyz") as ready:
            assert ready.status == 200, await ready.text()
    assert not server_errors, f"{len(server_errors)} of {REQUESTS}:\n" + "\n".join(server_errors[:15])
    assert sum(statuses.values()) == REQUESTS and any(s < 300 for s in statuses)  # some got through
    assert "Traceback" not in caplog.text
