"""When briefs go out: a cron time per destination in its time zone, once per slot, with one catch-up.

`BriefScheduler.run_due(now)` is called every minute (APScheduler). For each
destination it finds the latest slot at or before now (APScheduler's `CronTrigger`,
so 08:00 stays 08:00 local across daylight-saving changes). If that slot has no brief
yet and is within the grace period, it claims the slot in Redis (one process of a
deployment wins) and sends the brief of the window since that destination's last
brief. After downtime only the latest missed slot is sent: one catch-up, not one per
missed day.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from engine.alerting.routing import Destination
from engine.errors import DeliveryFailed, QueueUnavailable

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 6 * 3600
DEFAULT_WINDOW_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class BriefSchedule:
    destination: Destination
    hour: int
    minute: int
    tz: ZoneInfo
    weekdays_only: bool = False

    def trigger(self) -> CronTrigger:
        days = "mon-fri" if self.weekdays_only else "*"
        return CronTrigger(hour=self.hour, minute=self.minute, day_of_week=days, timezone=self.tz)

    def last_slot(self, now: float) -> float | None:
        """The latest slot at or before `now` (within the last 8 days)."""
        trigger = self.trigger()
        moment = datetime.fromtimestamp(now, self.tz)
        current = trigger.get_next_fire_time(None, moment - timedelta(days=8))
        latest = None
        while current is not None and current <= moment:
            latest = current
            current = trigger.get_next_fire_time(current, current + timedelta(seconds=1))
        return latest.timestamp() if latest else None


def parse_schedule(
    destination: Destination, at: str, tz: ZoneInfo, weekdays_only: bool = False
) -> BriefSchedule:
    """A schedule from "HH:MM"; ValueError naming what is wrong."""
    try:
        hour, minute = (int(part) for part in at.split(":"))
    except ValueError:
        raise ValueError(f"{at!r} is not a time of day (use HH:MM, e.g. 08:00)") from None
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"{at!r} is not a time of day (use HH:MM, e.g. 08:00)")
    return BriefSchedule(destination, hour, minute, tz, weekdays_only)


class BriefLedger(Protocol):
    """Where claims and last-sent times live (Redis in production): shared by all processes."""

    async def claim(self, destination: Destination, slot: float) -> bool:
        """True for exactly one caller per (destination, slot)."""
        ...

    async def release(self, destination: Destination, slot: float) -> None: ...

    async def last_sent(self, destination: Destination) -> float | None: ...

    async def mark_sent(self, destination: Destination, slot: float) -> None: ...


MakeBrief = Callable[[float, float], Awaitable[object]]
SendBrief = Callable[[Destination, object], Awaitable[None]]


class BriefScheduler:
    def __init__(
        self,
        schedules: Sequence[BriefSchedule],
        ledger: BriefLedger,
        make_brief: MakeBrief,
        send: SendBrief,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.schedules = list(schedules)
        self.ledger = ledger
        self.make_brief = make_brief
        self.send = send
        self.grace_s = grace_s

    async def run_due(self, now: float) -> list[Destination]:
        """Send the briefs whose slot has come; return the destinations this process served."""
        served = []
        for schedule in self.schedules:
            try:
                if await self._run_one(schedule, now):
                    served.append(schedule.destination)
            except QueueUnavailable as exc:  # Redis is away: the next minute tries again, within the grace
                log.warning("brief for %s waits: %s", schedule.destination, exc)
        return served

    async def _run_one(self, schedule: BriefSchedule, now: float) -> bool:
        slot = schedule.last_slot(now)
        if slot is None or now - slot > self.grace_s:
            return False
        destination = schedule.destination
        last = await self.ledger.last_sent(destination)
        if last is not None and last >= slot:
            return False
        if not await self.ledger.claim(destination, slot):
            return False  # another process has it
        since = last if last is not None and now - last < 8 * 86400 else slot - DEFAULT_WINDOW_S
        try:
            brief = await self.make_brief(since, now)
            await self.send(destination, brief)
        except DeliveryFailed as exc:
            await self.ledger.release(destination, slot)
            log.warning("brief to %s not delivered (%s); trying again next minute", destination, exc)
            return False
        await self.ledger.mark_sent(destination, slot)
        log.info(
            "brief sent to %s for the %s slot",
            destination,
            datetime.fromtimestamp(slot, schedule.tz).strftime("%Y-%m-%d %H:%M %Z"),
        )
        return True
