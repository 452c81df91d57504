"""Background loops are kept alive and visible: a crash is logged, counted, restarted, reported."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.supervise import Backoff, Supervisor

FAST = Backoff(min_s=0.05, max_s=0.2, healthy_after_s=10)


async def test_a_crashing_loop_is_restarted_and_named_while_down(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(Backoff(min_s=0.3, max_s=0.3))
    stop = asyncio.Event()
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise TypeError("unexpected keyword argument 'snippet_type'")
        await stop.wait()

    with caplog.at_level(logging.ERROR):
        supervisor.spawn("deliverer", flaky, stop)
        await asyncio.sleep(0.1)
        assert supervisor.problems() == {
            "deliverer": "restarting after TypeError: unexpected keyword argument 'snippet_type'"
        }
        await asyncio.sleep(0.4)
    assert supervisor.problems() == {} and len(runs) == 2
    assert supervisor.health["deliverer"].failures == 1
    assert "background loop deliverer failed" in caplog.text and "Traceback" in caplog.text
    stop.set()
    await asyncio.wait(supervisor.tasks, timeout=2)
    assert supervisor.health["deliverer"].state == "stopped" and supervisor.problems() == {}


async def test_a_loop_that_returns_on_its_own_is_restarted() -> None:
    supervisor = Supervisor(FAST)
    stop = asyncio.Event()
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1

    supervisor.spawn("dispatcher", quits, stop)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait(supervisor.tasks, timeout=2)
    assert runs >= 2 and "returned although nothing asked it to stop" in (
        supervisor.health["dispatcher"].last_error or ""
    )


async def test_a_failing_job_is_counted_and_shown_and_does_not_raise() -> None:
    supervisor = Supervisor(FAST)

    async def sync() -> None:
        raise ConnectionError("Ollama is not reachable")

    job = supervisor.job("index-sync", sync)
    await job()
    await job()
    assert supervisor.health["index-sync"].failures == 2
    assert supervisor.lines() == [
        "index-sync: 2 runs, 2 failures (last: ConnectionError: Ollama is not reachable)"
    ]
    assert supervisor.problems() == {}  # jobs retry at their next run; they are not an outage


def test_work_a_library_runs_is_watched() -> None:
    supervisor = Supervisor(FAST)
    polling = {"running": True}
    supervisor.watch("telegram-polling", lambda: polling["running"])
    assert supervisor.problems() == {}
    polling["running"] = False  # e.g. python-telegram-bot's updater gave up
    assert supervisor.problems() == {"telegram-polling": "stopped"}
