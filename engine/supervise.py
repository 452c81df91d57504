"""Supervised background work: every loop and scheduled job is named, kept alive and visible.

A loop that raises is logged with its name and traceback, counted, and restarted after
a backoff (1 s doubling to a minute, reset once it has run a minute without failing).
While it waits to restart it is not running: `/readyz` answers 503 naming it and
`/status` shows it with its last error. A scheduled job that raises is logged and
counted; the next run is its retry. Cancellation passes through, except that of a job
cut short at shutdown (`finish_jobs`), which is said in one line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from engine import metrics

log = logging.getLogger(__name__)

LoopState = Literal["running", "restarting", "stopped", "done"]


@dataclass(slots=True)
class LoopHealth:
    """How one background loop or job is doing."""

    name: str
    kind: Literal["loop", "job"]
    state: LoopState = "running"
    runs: int = 0  # loop starts, or job runs
    failures: int = 0
    last_error: str | None = None

    def line(self) -> str:
        """One line for `/status`."""
        text = f"{self.name}: {self.state if self.kind == 'loop' else f'{self.runs} runs'}"
        if self.failures:
            text += f", {self.failures} failures (last: {self.last_error})"
        return text


@dataclass(frozen=True, slots=True)
class Backoff:
    min_s: float = 1.0
    max_s: float = 60.0
    healthy_after_s: float = 60.0  # a loop that ran this long without failing starts afresh


class Supervisor:
    """Starts named loops, restarts them when they fail, and reports on them."""

    def __init__(self, backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.clock = clock
        self.health: dict[str, LoopHealth] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._jobs_running: set[asyncio.Task[object]] = set()
        self._watched: dict[str, Callable[[], bool]] = {}
        self._closing = False

    def spawn(
        self, name: str, run: Callable[[], Awaitable[Any]], stop: asyncio.Event, *, once: bool = False
    ) -> asyncio.Task[None]:
        """Run `run()` until `stop`; restart it whenever it fails (`once`: done when it returns)."""
        self.health[name] = LoopHealth(name, "loop")
        task = asyncio.create_task(self._keep(name, run, stop, once), name=name)
        self.tasks.append(task)
        return task

    async def _keep(
        self, name: str, run: Callable[[], Awaitable[Any]], stop: asyncio.Event, once: bool
    ) -> None:
        health = self.health[name]
        delay = self.backoff.min_s
        while not stop.is_set():
            health.state, health.runs = "running", health.runs + 1
            started = self.clock()
            try:
                await run()
                if once or stop.is_set():
                    break
                raise RuntimeError("the loop returned although nothing asked it to stop")
            except Exception as exc:
                if self.clock() - started >= self.backoff.healthy_after_s:
                    delay = self.backoff.min_s
                self._failed(health, exc)
                metrics.LOOP_RESTARTS.labels(name).inc()
                log.exception(
                    "background loop %s failed (%d so far); restarting in %.0fs", name, health.failures, delay
                )
            health.state = "restarting"
            if await stopped_within(stop, delay):
                break
            delay = min(delay * 2, self.backoff.max_s)
        health.state = "done" if once and not stop.is_set() else "stopped"

    def watch(self, name: str, alive: Callable[[], bool]) -> None:
        """Watch work a library runs itself (Telegram's polling): reported down while `alive()` is false."""
        self._watched[name] = alive

    def job(self, name: str, run: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        """A scheduled job that logs and counts its failures instead of raising into the scheduler."""
        health = self.health.setdefault(name, LoopHealth(name, "job"))

        async def supervised() -> None:
            health.runs += 1
            task = asyncio.current_task()
            if task is not None:
                self._jobs_running.add(task)
            try:
                await run()
            except asyncio.CancelledError:
                if not self._closing:
                    raise
                log.info("scheduled job %s was cut short by shutdown", name)  # its next run catches up
            except Exception as exc:
                self._failed(health, exc)
                metrics.LOOP_RESTARTS.labels(name).inc()
                log.exception(
                    "scheduled job %s failed (%d so far); it runs again at its next time",
                    name,
                    health.failures,
                )
            finally:
                if task is not None:
                    self._jobs_running.discard(task)

        return supervised

    async def finish_jobs(self, timeout_s: float = 10.0) -> None:
        """At shutdown: let running jobs finish (then cut them short) before the stores close."""
        self._closing = True
        running = set(self._jobs_running)
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=2)

    def _failed(self, health: LoopHealth, exc: BaseException) -> None:
        health.failures += 1
        health.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def problems(self) -> dict[str, str]:
        """Loops that should be running and are not, with why (empty: all well)."""
        down = {
            h.name: f"restarting after {h.last_error}"
            for h in self.health.values()
            if h.kind == "loop" and h.state == "restarting"
        }
        down.update(
            (name, "stopped") for name, alive in self._watched.items() if not self._closing and not alive()
        )
        return down

    def lines(self) -> list[str]:
        """What `/status` shows: each loop and job with its state and failures."""
        return [h.line() for h in sorted(self.health.values(), key=lambda h: (h.kind, h.name))]


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; whether it was set (a loop's sleep that ends at shutdown)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
