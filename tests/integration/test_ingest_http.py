"""HTTP ingest on the real Redis, through a worker, into SQLite; and every kind of bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from bot.http import build_app
from engine.intake.ingest import Ingest
from storage.keys import Keys
from storage.redis_stream import RedisSignalQueue
from storage.sqlite import SqliteRecord
from tests.conftest import FIXTURES, RecordingSink, drain, make_processor, make_worker

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TS = 1_795_000_000


@pytest.fixture
async def client(queue: RedisSignalQueue, record: SqliteRecord) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(
        Ingest(queue, max_records=5_000),
        {"redis": queue.ping, "sqlite": record.ping},
        token=TOKEN,
        max_body_bytes=1024 * 1024,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.fixture
def worker(queue: RedisSignalQueue, record: SqliteRecord, redis: aioredis.Redis, keys: Keys) -> Any:
    return make_worker("w1", queue, make_processor(record, redis, keys, quiet_points=3), RecordingSink())


async def test_signal_travels_from_http_to_sqlite(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    body = [{"series": "checkout.latency_p99", "value": 180 + i % 5, "ts": TS + 60 * i} for i in range(40)]
    response = await client.post("/v1/signals", json=body, headers=AUTH)
    assert response.status == 202
    reply = await response.json()
    assert reply["accepted"] == 40 and len(reply["ids"]) == 40 and reply["rejected"] == []

    assert await drain(worker) == 40
    assert await record.count("signals") == 40


async def test_requests_that_arrive_together_share_redis_commands_and_each_get_their_own_answer(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any, redis: aioredis.Redis
) -> None:
    """Requests that come while a publish is under way go to Redis together in the next
    command; each is still answered only for its own signals, and each signal lands once."""

    async def publish_commands() -> int:
        stats = await redis.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))

    async def post(n: int) -> dict[str, Any]:
        body = [
            {"series": f"svc{n}.latency", "value": 100 + i, "ts": TS + 60 * i, "id": f"r{n}-{i}"}
            for i in range(5)
        ]
        response = await client.post("/v1/signals", json=body, headers=AUTH)
        assert response.status == 202
        return dict(await response.json())

    before = await publish_commands()
    replies = await asyncio.gather(*(post(n) for n in range(20)))
    commands = await publish_commands() - before
    assert [reply["ids"] for reply in replies] == [[f"r{n}-{i}" for i in range(5)] for n in range(20)]
    assert commands < 20, f"{commands} publish commands for 20 requests"
    assert await drain(worker) == 100
    assert await record.count("signals") == 100


async def test_a_spike_becomes_an_alert_people_see(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    normal = [{"series": "pay.errors", "value": 10 + (i % 3), "ts": TS + 60 * i} for i in range(40)]
    spike = {"series": "pay.errors", "value": 95, "ts": TS + 60 * 40, "labels": {"service": "pay"}}
    await client.post("/v1/signals", json=[*normal, spike], headers=AUTH)
    await drain(worker)
    firing = await record.firing_alerts()
    assert [(a.series, a.status) for a in firing] == [("pay.errors", "firing")]
    assert firing[0].value == 95 and firing[0].score > 0.9
    assert worker.sink.notes == [(firing[0].id, "pay.errors", "opened")]


async def test_ndjson_and_single_object_bodies(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    lines = "\n".join(json.dumps({"series": "a.b", "value": i, "ts": TS + i}) for i in range(3))
    ndjson = await client.post(
        "/v1/signals", data=lines + "\n\n", headers={**AUTH, "Content-Type": "application/x-ndjson"}
    )
    assert ndjson.status == 202 and (await ndjson.json())["accepted"] == 3
    single = await client.post("/v1/signals", json={"series": "a.b", "value": 9, "ts": TS + 9}, headers=AUTH)
    assert single.status == 202 and (await single.json())["accepted"] == 1
    await drain(worker)
    assert await record.count("signals") == 4


async def test_a_resent_batch_is_recorded_once(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    body = [{"series": "a.b", "value": i, "ts": TS + i} for i in range(10)]
    for _ in range(3):
        assert (await client.post("/v1/signals", json=body, headers=AUTH)).status == 202
    await drain(worker)
    assert await record.count("signals") == 10


async def test_partly_bad_batch_stores_the_good_and_names_the_bad(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    body = [
        {"series": "a.b", "value": 1, "ts": TS},
        {"series": "a.b", "value": "NaN", "ts": TS + 1},
        {"series": "a.b", "value": 2, "ts": TS + 2, "surprise": "kept"},
        {"value": 3},
        {"series": "a.b", "value": 4, "ts": -1e300},  # far too old for any date: named, not a 500
    ]
    response = await client.post("/v1/signals", json=body, headers=AUTH)
    assert response.status == 202
    reply = await response.json()
    assert reply["accepted"] == 2
    assert [(r["index"], r["errors"][0]["field"]) for r in reply["rejected"]] == [
        (1, "value"),
        (3, "series"),
        (4, "ts"),
    ]
    await drain(worker)
    assert await record.count("signals") == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"", "application/json", 400, "empty body"),
        (b"   ", "application/json", 400, "empty body"),
        (b'"a string"', "application/json", 400, "JSON object or an array"),
        (b'{"series": "a", "value": 1}', "text/html", 415, "content type 'text/html'"),
        (b'{"series": "a", "value": 1}', "", 415, "is not accepted"),
        (b'[{"series": "a", "value": "1e999"}]', "application/json", 400, "finite"),
        (b'[{"series": "a", "value": [1]}]', "application/json", 400, "value"),
        (
            b'[{"series": "a", "kind": "event", "text": "' + b"x" * 9000 + b'"}]',
            "application/json",
            400,
            "8192",
        ),
        (
            json.dumps([{"series": "a", "value": 1}] * 10_000).encode(),
            "application/json",
            413,
            "limit is 5000",
        ),
        (b"x" * (1024 * 1024 + 10), "application/json", 413, "larger than the limit"),
        (b'{"series": "a"}\nnot json\n', "application/x-ndjson", 400, "line 2 is not valid JSON"),
        (b'[{"series": "a", "ts": -1e300, "value": 1}]', "application/json", 400, "before 2000"),
        (b"\x78\x9cgarbage", "application/json; deflate", 400, "could not be read as sent"),
        (b"abc", "application/json; x-bogus", 415, "Content-Encoding 'x-bogus' is not accepted"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    client: TestClient[Any, Any], body: bytes, content_type: str, status: int, fragment: str
) -> None:
    content_type, _, encoding = content_type.partition("; ")
    headers = {**AUTH, "Content-Type": content_type} if content_type else dict(AUTH)
    if encoding:
        headers["Content-Encoding"] = encoding
    response = await client.post("/v1/signals", data=body, headers=headers)
    assert response.status == status
    assert fragment in json.dumps(await response.json())


async def test_a_brotli_body_is_refused_not_dropped(client: TestClient[Any, Any]) -> None:
    """aiohttp's parser refuses br itself (no brotli decoder here): a 400, the connection answered."""
    headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "br"}
    response = await client.post("/v1/signals", data=b"\x8b\x08not brotli", headers=headers)
    assert response.status in (400, 415)
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}])
async def test_wrong_or_missing_token_is_401(client: TestClient[Any, Any], headers: dict[str, str]) -> None:
    response = await client.post("/v1/signals", json={"series": "a", "value": 1}, headers=headers)
    assert response.status == 401
    assert "bearer token" in (await response.json())["error"]


async def test_health_needs_no_token_and_ready_checks_both_stores(
    client: TestClient[Any, Any], record: SqliteRecord
) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and await ready.json() == {
        "ready": True,
        "redis": "ok",
        "sqlite": "ok",
        "loops": "ok",
    }
    await record.close()  # the record becomes unreachable
    down = await client.get("/readyz")
    assert down.status == 503 and (await down.json())["sqlite"] == "unavailable"


async def test_alertmanager_webhook_opens_and_resolves(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    firing = (FIXTURES / "alertmanager/firing.json").read_bytes()
    headers = {**AUTH, "Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}
    response = await client.post("/v1/webhooks/alertmanager", data=firing, headers=headers)
    assert response.status == 202 and (await response.json())["accepted"] == 2
    await drain(worker)
    assert sorted(a.labels["instance"] for a in await record.firing_alerts()) == ["pay-1:9100", "pay-2:9100"]

    resolved = (FIXTURES / "alertmanager/one-resolved.json").read_bytes()
    assert (await client.post("/v1/webhooks/alertmanager", data=resolved, headers=headers)).status == 202
    await drain(worker)
    assert [a.labels["instance"] for a in await record.firing_alerts()] == ["pay-2:9100"]
    assert "resolved" in {n[2] for n in worker.sink.notes}


async def test_grafana_webhook_and_changes(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    grafana = {
        "receiver": "r",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "service": "search"},
                "annotations": {"summary": "disk 97%"},
                "startsAt": "2026-11-22T03:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "abc",
                "values": {"B": 97.1},
            }
        ],
    }
    assert (await client.post("/v1/webhooks/grafana", json=grafana, headers=AUTH)).status == 202
    change = {"service": "checkout", "type": "deploy", "version": "v2.4", "ts": TS}
    assert (await client.post("/v1/changes", json=change, headers=AUTH)).status == 202
    bad_change = await client.post("/v1/changes", json={"type": "deploy"}, headers=AUTH)
    assert bad_change.status == 400
    assert (await bad_change.json())["rejected"][0]["errors"][0]["field"] == "service"
    await drain(worker)
    firing = await record.firing_alerts()
    assert [(a.title, a.source, a.value) for a in firing] == [("DiskFull", "grafana", 97.1)]
    assert await record.count("signals") == 2


async def test_resolving_an_alert_alertmanager_still_fires_is_refused_with_a_hint(
    client: TestClient[Any, Any], record: SqliteRecord, worker: Any
) -> None:
    """Alertmanager owns the state of its alerts: chat would otherwise show RESOLVED for a live one."""
    import time

    from engine.alerting.actions import Actor, AlertActions
    from storage.notify_store import NotifyStore

    headers = {**AUTH, "Content-Type": "application/json"}
    firing = (FIXTURES / "alertmanager/firing.json").read_bytes()
    assert (await client.post("/v1/webhooks/alertmanager", data=firing, headers=headers)).status == 202
    await drain(worker)
    target = (await record.firing_alerts())[0]
    actions = AlertActions(NotifyStore(record), time.time)
    result = await actions.resolve(Actor("telegram", "1", "lena", "-100"), target.id, "fixed it")
    assert not result.ok
    assert "still fires in alertmanager" in result.message and f"silence {target.id} 1h" in result.message
    assert target.id in {a.id for a in await record.firing_alerts()}  # still firing, as it is
    # Alertmanager's own resolve still closes it.
    resolved = (FIXTURES / "alertmanager/one-resolved.json").read_bytes()
    assert (await client.post("/v1/webhooks/alertmanager", data=resolved, headers=headers)).status == 202
    await drain(worker)
    assert len(await record.firing_alerts()) == 1
