"""The SQLite record: retention, and pruning that never lands inside a worker's transaction."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as aioredis

from engine.alerting.alerts import Alert, AlertChange
from engine.detection.detect import Anomaly
from engine.signal import make_signal
from storage.keys import Keys
from storage.redis_stream import RedisSignalQueue
from storage.sqlite import SqliteRecord
from tests.bot.test_cli import run
from tests.conftest import REDIS_URL

NOW = time.time()
OLD = NOW - 20 * 86400


def anomaly(ts: float, key: str) -> Anomaly:
    return Anomaly(key, key, ts, "a.b", "a", 9.0, 1.0, 0.0, 2.0, 0.9, ("level",), "a.b 9 vs expected 1")


async def test_retention_drops_old_signals_anomalies_and_changes_but_keeps_alerts(
    record: SqliteRecord,
) -> None:
    signals = [
        make_signal(series="a.b", value=1.0, ts=OLD),
        make_signal(series="a.b", value=2.0, ts=NOW - 60),
        make_signal(kind="change", series="a.deploy", ts=OLD, labels={"service": "a"}, text="deploy a v1"),
        make_signal(
            kind="change", series="a.deploy", ts=NOW - 60, labels={"service": "a"}, text="deploy a v2"
        ),
    ]
    alert = Alert(
        id="old1", group_key="anomaly:a.b", status="resolved", severity="warning", title="a.b unusually high",
        series="a.b", service="a", source="t", started_at=OLD, updated_at=OLD, resolved_at=OLD,
    )  # fmt: skip
    async with record.transaction() as tx:
        await tx.add_signals([(s, s.ts) for s in signals])
        await tx.add_anomalies([anomaly(OLD, "old"), anomaly(NOW - 60, "new")])
        await tx.write_alerts([AlertChange(alert, "opened")])
    removed = await record.prune(NOW - 14 * 86400, chunk=1)  # chunk 1: the loop, not one statement
    assert removed == {"signals": 2, "anomalies": 1, "changes": 1}
    assert await record.count("signals") == 2
    assert await record.count("anomalies") == 1
    assert await record.count("changes") == 1
    assert await record.count("alerts") == 1


async def test_pruning_waits_for_an_open_transaction_instead_of_joining_it(record: SqliteRecord) -> None:
    async with record.transaction() as tx:
        await tx.add_signals([(make_signal(series="a.b", value=1.0, ts=OLD), OLD)])
    started = asyncio.Event()

    async def worker_batch_that_fails() -> None:
        try:
            async with record.transaction() as tx:
                await tx.add_signals([(make_signal(series="c.d", value=1.0, ts=NOW), NOW)])
                started.set()
                await asyncio.sleep(0.2)
                raise RuntimeError("the batch fails and rolls back")
        except RuntimeError:
            pass

    batch = asyncio.create_task(worker_batch_that_fails())
    await started.wait()
    removed = await record.prune(NOW - 86400)  # must not ride along in the batch's transaction
    await batch
    assert removed["signals"] == 1
    assert await record.count("signals") == 0  # the prune held although the batch rolled back


async def test_dead_letters_command_lists_what_was_set_aside(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    queue = RedisSignalQueue(redis, keys, maxlen=1000)
    await queue.ensure_group()
    from engine.ports import QueuedSignal

    poison = make_signal(series="pay.latency", value=666.0, ts=NOW)
    await queue.dead_letter(QueuedSignal("1-0", poison, NOW), "ZeroDivisionError('bug in detector')")
    env = {"SIGOPS_REDIS_URL": REDIS_URL, "SIGOPS_REDIS_PREFIX": keys.prefix}
    result = run(["dead-letters"], tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "pay.latency" in result.stdout and poison.id in result.stdout
    assert "ZeroDivisionError('bug in detector')" in result.stdout
    nothing = run(["dead-letters"], tmp_path)
    assert nothing.returncode == 2 and "SIGOPS_REDIS_URL" in nothing.stderr


async def test_a_question_seconds_after_data_arrived_knows_its_service(record: SqliteRecord) -> None:
    """The series catalogue is written with the signals: no wait for the 30 s document sync."""
    from engine.answers.answer import RetrievalAnswerer
    from storage.documents import DocumentStore

    points = [
        make_signal(
            series="payments.latency_p99",
            value=200.0 + i % 7,
            ts=NOW - 600 + i,
            labels={"service": "payments"},
        )
        for i in range(300)
    ]
    async with record.transaction() as tx:
        await tx.add_signals([(s, s.ts) for s in points])
    answer = await RetrievalAnswerer(record, names=DocumentStore(record)).answer(
        "what spiked on payments in the last hour?"
    )
    text = "\n".join(answer.summary)
    assert "No service or series named" not in text and answer.services == ("payments",)
    assert await record.series_named("latency_p99") == ["payments.latency_p99"]
    await record.prune(NOW + 1)  # everything is older than this: the catalogue forgets it too
    assert await record.series_named("latency_p99") == []


async def test_is_anything_still_firing_names_every_firing_alert(record: SqliteRecord) -> None:
    from engine.answers.answer import RetrievalAnswerer

    alerts = [
        Alert(
            id=f"f{i:07d}",
            group_key=f"anomaly:svc{i}.errors",
            status="firing",
            severity="error",
            title=f"svc{i}.errors unusually high",
            series=f"svc{i}.errors",
            service=f"svc{i}",
            source="test",
            started_at=NOW - 600 * (i + 1),
            updated_at=NOW - 600 * (i + 1),
            score=0.5 + i / 100,
            acked_by="lena (telegram)" if i == 0 else None,
        )
        for i in range(11)
    ]
    async with record.transaction() as tx:
        await tx.write_alerts([AlertChange(a, "opened") for a in alerts])
    answer = await RetrievalAnswerer(record).answer("is anything still firing?")
    assert any(line.startswith("Still firing (11):") for line in answer.summary)
    assert {a.id for a in alerts} <= {e.id for e in answer.evidence}  # all 11, not the top 8
    assert any("acknowledged by lena (telegram)" in e.line for e in answer.evidence)
