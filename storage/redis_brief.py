"""The `BriefLedger` port on Redis: one claim per (destination, slot) by SET NX; last-sent times in a hash."""

from __future__ import annotations

import redis.asyncio as aioredis

from engine.alerting.routing import Destination
from storage.keys import Keys
from storage.redis_stream import guarded

CLAIM_TTL_S = 2 * 86400


class RedisBriefLedger:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def claim(self, destination: Destination, slot: float) -> bool:
        key = self.keys.brief_claim(str(destination), slot)
        return bool(
            await guarded(lambda: self.redis.set(key, "1", nx=True, ex=CLAIM_TTL_S), "claiming a brief")
        )

    async def release(self, destination: Destination, slot: float) -> None:
        await guarded(
            lambda: self.redis.delete(self.keys.brief_claim(str(destination), slot)), "releasing a brief"
        )

    async def last_sent(self, destination: Destination) -> float | None:
        raw = await guarded(
            lambda: self.redis.hget(self.keys.brief_sent, str(destination)), "reading brief times"
        )
        return float(raw) if raw is not None else None

    async def mark_sent(self, destination: Destination, slot: float) -> None:
        await guarded(
            lambda: self.redis.hset(self.keys.brief_sent, str(destination), repr(slot)), "saving a brief time"
        )
