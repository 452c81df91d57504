"""Brief scheduling with a fixed clock and the real Redis: local time across DST, one brief per slot
across processes, one catch-up after downtime."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from engine.alerting.routing import Destination
from engine.brief.schedule import BriefScheduler, parse_schedule
from engine.errors import DeliveryFailed
from storage.keys import Keys
from storage.redis_brief import RedisBriefLedger

pytestmark = [pytest.mark.redis, pytest.mark.record_free]
BERLIN = ZoneInfo("Europe/Berlin")
CHAT = Destination("telegram", "-100")


def ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN).timestamp()


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[Destination, float, float]] = []
        self.fail = False

    async def make(self, since: float, until: float) -> tuple[float, float]:
        return since, until

    async def send(self, destination: Destination, brief: object) -> None:
        if self.fail:
            raise DeliveryFailed("Telegram unreachable", retryable=True)
        since, until = brief  # type: ignore[misc]
        self.sent.append((destination, since, until))


def scheduler(
    redis: aioredis.Redis, keys: Keys, outbox: Outbox, weekdays_only: bool = False
) -> BriefScheduler:
    schedule = parse_schedule(CHAT, "08:00", BERLIN, weekdays_only)
    return BriefScheduler([schedule], RedisBriefLedger(redis, keys), outbox.make, outbox.send)


async def test_fires_at_eight_local_across_the_dst_change(redis: aioredis.Redis, keys: Keys) -> None:
    outbox = Outbox()
    s = scheduler(redis, keys, outbox)
    fired = []
    minute = ts("2026-03-27 06:00")
    while minute < ts("2026-03-31 12:00"):  # every minute, Friday to Tuesday; summer time began Sunday 29th
        if await s.run_due(minute):
            fired.append(datetime.fromtimestamp(minute, BERLIN).strftime("%a %d %H:%M %Z"))
        minute += 60
    assert fired == [
        "Fri 27 08:00 CET",
        "Sat 28 08:00 CET",
        "Sun 29 08:00 CEST",
        "Mon 30 08:00 CEST",
        "Tue 31 08:00 CEST",
    ]
    # Each brief covers the time since the one before: Sunday's window is 23 hours long.
    windows = [(until - since) / 3600 for _, since, until in outbox.sent]
    assert windows[1:] == [24, 23, 24, 24]


async def test_two_processes_send_one_brief(redis: aioredis.Redis, keys: Keys) -> None:
    outbox = Outbox()
    first, second = scheduler(redis, keys, outbox), scheduler(redis, keys, outbox)
    now = ts("2026-03-31 08:00")
    results = [await first.run_due(now), await second.run_due(now), await second.run_due(now + 60)]
    assert sum(len(r) for r in results) == 1 and len(outbox.sent) == 1


async def test_downtime_gets_one_catch_up_not_one_per_day(redis: aioredis.Redis, keys: Keys) -> None:
    outbox = Outbox()
    s = scheduler(redis, keys, outbox)
    await s.run_due(ts("2026-03-27 08:00"))  # Friday's brief, then the process is down until Tuesday 10:30
    await s.run_due(ts("2026-03-31 10:30"))
    await s.run_due(ts("2026-03-31 10:31"))
    assert len(outbox.sent) == 2
    _, since, until = outbox.sent[1]
    assert since == ts("2026-03-27 08:00") and until == ts("2026-03-31 10:30")  # everything since Friday


async def test_a_slot_missed_by_more_than_the_grace_waits_for_the_next(
    redis: aioredis.Redis, keys: Keys
) -> None:
    outbox = Outbox()
    s = scheduler(redis, keys, outbox)
    assert await s.run_due(ts("2026-03-31 15:00")) == []  # 7 h late: too late for a "morning" brief
    assert await s.run_due(ts("2026-04-01 08:00")) == [CHAT]


async def test_weekdays_only_skips_the_weekend(redis: aioredis.Redis, keys: Keys) -> None:
    outbox = Outbox()
    s = scheduler(redis, keys, outbox, weekdays_only=True)
    assert await s.run_due(ts("2026-03-28 08:00")) == []  # Saturday
    assert await s.run_due(ts("2026-03-30 08:00")) == [CHAT]  # Monday


async def test_a_failed_send_is_retried_next_minute(redis: aioredis.Redis, keys: Keys) -> None:
    outbox = Outbox()
    s = scheduler(redis, keys, outbox)
    outbox.fail = True
    assert await s.run_due(ts("2026-03-31 08:00")) == []
    outbox.fail = False
    assert await s.run_due(ts("2026-03-31 08:01")) == [CHAT] and len(outbox.sent) == 1
