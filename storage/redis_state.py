"""Per-series detector state kept in one Redis hash, so a restart resumes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis

from storage.keys import Keys
from storage.redis_stream import guarded


class RedisCursorStore:
    """The pull sources' `CursorStore` on a Redis hash (query name -> ts read up to)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def get(self, name: str) -> float | None:
        raw = await guarded(lambda: self.redis.hget(self.keys.pull_cursors, name), "reading a pull cursor")
        return float(raw) if raw is not None else None

    async def set(self, name: str, ts: float) -> None:
        await guarded(lambda: self.redis.hset(self.keys.pull_cursors, name, repr(ts)), "saving a pull cursor")


class RedisDetectorStateStore:
    """The `DetectorStateStore` port on a Redis hash (series -> packed state)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def load(self, series: Sequence[str]) -> dict[str, bytes]:
        if not series:
            return {}
        values = await guarded(
            lambda: self.redis.hmget(self.keys.detector_state, list(series)), "loading detector state"
        )
        return {name: blob for name, blob in zip(series, values, strict=True) if isinstance(blob, bytes)}

    async def save(self, states: Mapping[str, bytes]) -> None:
        if states:
            await guarded(
                lambda: self.redis.hset(self.keys.detector_state, mapping=dict(states)),  # type: ignore[arg-type]
                "saving detector state",
            )
