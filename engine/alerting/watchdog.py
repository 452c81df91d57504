"""A dead-man's switch on Alertmanager's always-firing Watchdog alert.

Prometheus setups keep one alert firing on purpose (`Watchdog`, `vector(1)`), which
Alertmanager re-sends every `repeat_interval`. Its arrivals are heartbeats, not alerts:
the worker records when each came (never announcing it), and `check` (run by a loop on
the dispatching node) opens a critical "alerting pipeline is silent" alert once none has come for `timeout_s`,
and resolves it when they come again. Nothing is said about a pipeline that never sent
a heartbeat: a setup without a Watchdog is not an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from engine.alerting.alerts import Alert, AlertChange, resolution, short_id
from engine.ports import RecordTransaction
from engine.text import duration

log = logging.getLogger(__name__)

SOURCE = "sigops"


class HeartbeatRecord(Protocol):
    async def last_beat(self, name: str) -> float | None:
        """When the heartbeat `name` last came (None: never)."""
        ...

    async def open_alerts(self, keys: Sequence[str]) -> dict[str, Alert]: ...

    def transaction(self) -> AbstractAsyncContextManager[RecordTransaction]: ...


@dataclass(frozen=True, slots=True)
class DeadMansSwitch:
    name: str  # the heartbeat alert's alertname
    timeout_s: float

    @property
    def key(self) -> str:
        return f"watchdog:{self.name}"

    def judge(self, last_beat: float | None, current: Alert | None, now: float) -> AlertChange | None:
        """The change the heartbeat's silence (or return) calls for, if any."""
        firing = current is not None and current.status != "resolved"
        if last_beat is None:
            return None
        silent_for = now - last_beat
        if silent_for > self.timeout_s and not firing:
            return AlertChange(self._alert(last_beat, now), "opened")
        if silent_for <= self.timeout_s and firing:
            assert current is not None
            return resolution(current, now)
        return None

    def _alert(self, last_beat: float, now: float) -> Alert:
        silent = duration(now - last_beat)
        return Alert(
            id=short_id(self.key, now),
            group_key=self.key,
            status="firing",
            severity="critical",
            title="Alerting pipeline is silent",
            series=self.name,
            service="",
            source=SOURCE,
            started_at=now,
            updated_at=now,
            score=1.0,
            explanation=(
                f"No {self.name} alert has arrived for {silent} "
                f"(SigOps allows {duration(self.timeout_s)} between them). "
                "It fires all the time on purpose: Prometheus, Alertmanager, or the way from them to "
                "SigOps is down, so other alerts may not be reaching anyone either."
            ),
            labels={"alertname": "AlertingPipelineSilent", "heartbeat": self.name},
        )


async def check(switch: DeadMansSwitch, record: HeartbeatRecord, now: float) -> AlertChange | None:
    """Look at the heartbeat once; record and return the change it calls for."""
    last = await record.last_beat(switch.name)
    current = (await record.open_alerts([switch.key])).get(switch.key)
    change = switch.judge(last, current, now)
    if change is None:
        return None
    async with record.transaction() as tx:
        await tx.write_alerts([change])
    if change.change == "opened":
        log.error(
            "no %s heartbeat for %s: the alerting pipeline is silent",
            switch.name,
            duration(now - (last or now)),
        )
    else:
        log.warning("the %s heartbeat is back: the alerting pipeline speaks again", switch.name)
    return change
