"""The dead-man's switch: Alertmanager's Watchdog through the real worker path and SQLite."""

from __future__ import annotations

import copy
import time

import redis.asyncio as aioredis

from engine.alerting.alerts import AlertPolicy
from engine.alerting.watchdog import DeadMansSwitch, check
from engine.detection.detect import Detection
from engine.intake.webhooks import from_alertmanager
from engine.intake.worker import SignalProcessor
from engine.ports import QueuedSignal
from engine.signal import validate_batch
from storage.keys import Keys
from storage.redis_state import RedisDetectorStateStore
from storage.sqlite import SqliteRecord
from tests.conftest import fixture_json

SWITCH = DeadMansSwitch("Watchdog", timeout_s=600)


def watchdog_webhook() -> dict:  # type: ignore[type-arg]
    """What Alertmanager sends for the always-firing Watchdog, every repeat_interval, unchanged."""
    payload = copy.deepcopy(fixture_json("alertmanager/firing.json"))
    alert = payload["alerts"][0]
    alert["labels"] = {"alertname": "Watchdog", "severity": "none", "prometheus": "monitoring/k8s"}
    alert["annotations"] = {"summary": "An alert that should always be firing to certify Alertmanager works."}
    alert["fingerprint"] = "e5a6a5b4c3d2e1f0"
    payload["alerts"] = [alert]
    return payload


async def arrive(processor: SignalProcessor, received_at: float) -> list[str]:
    signals, rejected = validate_batch(from_alertmanager(watchdog_webhook()))
    assert rejected == []
    outcome = await processor.process([QueuedSignal(f"{received_at}-0", s, received_at) for s in signals])
    return [c.change for c in outcome.alert_changes]


async def test_the_watchdog_is_a_heartbeat_and_its_silence_a_critical_alert(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    processor = SignalProcessor(
        record,
        RedisDetectorStateStore(redis, keys),
        Detection(),
        AlertPolicy(heartbeats=frozenset({"Watchdog"})),
    )
    now = time.time()
    # Nothing was ever heard: a setup without a Watchdog is not an outage.
    assert await check(SWITCH, record, now) is None

    # It arrives, and again with the same body (the same signal id): never an alert itself.
    assert await arrive(processor, now) == []
    assert await arrive(processor, now + 120) == []
    assert await record.last_beat("Watchdog") == now + 120
    assert await check(SWITCH, record, now + 600) is None
    assert await record.firing_alerts() == []

    # Then nothing for longer than the timeout: one critical alert, not one per check.
    opened = await check(SWITCH, record, now + 120 + 601)
    assert opened is not None and opened.change == "opened"
    firing = await record.firing_alerts()
    assert [(a.title, a.severity) for a in firing] == [("Alerting pipeline is silent", "critical")]
    assert "No Watchdog alert has arrived for 10 min" in firing[0].explanation
    assert await check(SWITCH, record, now + 120 + 900) is None

    # It comes back: the alert resolves.
    assert await arrive(processor, now + 1000) == []
    resolved = await check(SWITCH, record, now + 1001)
    assert resolved is not None and resolved.change == "resolved"
    assert await record.firing_alerts() == []


async def test_without_a_switch_the_watchdog_is_an_ordinary_alert(
    record: SqliteRecord, redis: aioredis.Redis, keys: Keys
) -> None:
    processor = SignalProcessor(record, RedisDetectorStateStore(redis, keys), Detection(), AlertPolicy())
    assert await arrive(processor, time.time()) == ["opened"]
