"""What worked last time: a new alert carries how the most similar past one ended."""

from __future__ import annotations

import time
from dataclasses import replace

import redis.asyncio as aioredis

from bot.alert_message import group_reply
from engine.alerting.alerts import Alert, AlertChange, AlertPolicy
from engine.alerting.notify import Notification
from engine.answers.answer import RetrievalAnswerer
from engine.detection.detect import Detection
from engine.intake.worker import SignalProcessor
from engine.ports import QueuedSignal
from engine.signal import make_signal
from storage.keys import Keys
from storage.redis_state import RedisDetectorStateStore
from storage.sqlite import SqliteRecord


def am_alert(
    ts: float, name: str, service: str, instance: str = "", text: str = "", status: str = "firing"
) -> QueuedSignal:
    """An Alertmanager-style alert signal (an alertname, the service, perhaps an instance)."""
    labels = {
        "service": service,
        "alertname": name,
        "status": status,
        **({"instance": instance} if instance else {}),
    }
    signal = make_signal(
        kind="alert", series=f"{service}.{name}", ts=ts, severity="critical",
        text=text or f"{name} on {instance}", labels=labels,
    )  # fmt: skip
    return QueuedSignal(f"{ts}-{name}-{instance}", signal, ts)


def auth_down(ts: float, status: str = "firing", service: str = "auth") -> QueuedSignal:
    return am_alert(ts, "AuthDown", service, text="auth is down", status=status)


async def resolve(record: SqliteRecord, alert: Alert, at: float, by: str, note: str) -> None:
    """Record `alert` as resolved at `at` by `by`, with what they did."""
    async with record.transaction() as tx:
        fixed = replace(
            alert, status="resolved", resolved_at=at, updated_at=at, version=alert.version + 1,
            resolved_by=by, note=note,
        )  # fmt: skip
        await tx.write_alerts([AlertChange(fixed, "resolved")])


async def test_a_new_alert_says_what_worked_last_time_and_cites_it(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    processor = SignalProcessor(record, RedisDetectorStateStore(redis, keys), Detection(), AlertPolicy())
    t0 = time.time() - 3 * 86400
    [first] = [c.alert for c in (await processor.process([auth_down(t0)])).alert_changes]
    assert "last_time" not in first.context  # nothing similar ever ended: nothing is said
    await resolve(record, first, t0 + 1500, "lena.m", "rolled back auth to v1.8.4")
    # Another service's alert of the same name is not "the same" when a closer one exists.
    await processor.process([auth_down(t0 + 2000, service="billing")])

    [again] = [c.alert for c in (await processor.process([auth_down(t0 + 3 * 86400)])).alert_changes]
    last = again.context["last_time"]
    assert (last["id"], last["resolved_by"], last["note"]) == (
        first.id,
        "lena.m",
        "rolled back auth to v1.8.4",
    )
    note = Notification(
        "g1", 1, "first notification", "default", {}, (again,), {}, frozenset(), frozenset(), t0
    )
    text = "\n".join(group_reply(note).blocks)
    assert (
        "🕘 Last time (3 days ago): resolved by lena.m after 25 min: "
        f"'rolled back auth to v1.8.4' [{first.id}]" in text
    )

    # And a `why` question about it is told the same, citing the past alert as evidence.
    found = await RetrievalAnswerer(record).answer("why did auth alert?")
    assert found.intent == "why"
    assert any(
        f"[{again.id}]: last time (3 days ago): resolved by lena.m after 25 min: "
        f"'rolled back auth to v1.8.4' [{first.id}]" in line
        for line in found.summary
    ), found.summary
    assert first.id in {e.id for e in found.evidence}


async def test_a_new_alert_with_no_past_of_its_own_cites_the_most_alike_one(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    processor = SignalProcessor(record, RedisDetectorStateStore(redis, keys), Detection(), AlertPolicy())
    t0 = time.time() - 2 * 86400
    [past] = [
        c.alert
        for c in (await processor.process([am_alert(t0, "DiskFull", "orders", "db1:9100")])).alert_changes
    ]
    await resolve(record, past, t0 + 600, "sam", "pruned WAL archive")

    [alike] = [
        c.alert
        for c in (
            await processor.process([am_alert(t0 + 86400, "DiskFull", "billing", "db2:9100")])
        ).alert_changes
    ]
    last = alike.context["last_time"]
    assert (last["id"], last["note"], last.get("similar")) == (past.id, "pruned WAL archive", True)
    note = Notification(
        "g1", 1, "first notification", "default", {}, (alike,), {}, frozenset(), frozenset(), t0
    )
    text = "\n".join(group_reply(note).blocks)
    assert f"🕘 Similar before ({past.name}, 24 h ago): resolved by sam after 10 min" in text, text

    [other] = [
        c.alert
        for c in (
            await processor.process([am_alert(t0 + 86400, "CertExpiring", "billing", "api")])
        ).alert_changes
    ]
    assert "last_time" not in other.context  # nothing alike ever ended: nothing is said
