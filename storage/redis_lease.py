"""Shard leases and worker heartbeats on Redis (SET NX PX, WATCH/MULTI to renew)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from storage.keys import Keys
from storage.redis_stream import guarded


class RedisShardLeases:
    """The `ShardLeases` port. Works on a real Redis and on the embedded stand-in."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def heartbeat(self, worker: str, now: float, ttl_ms: int) -> int:
        async def beat() -> int:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self.keys.workers, {worker: now})
                pipe.zremrangebyscore(self.keys.workers, "-inf", now - 3 * ttl_ms / 1000)
                pipe.zcard(self.keys.workers)
                replies = await pipe.execute()
            return int(replies[-1])

        return await guarded(beat, "heartbeating")

    async def try_acquire(self, shard: int, worker: str, ttl_ms: int) -> bool:
        return bool(
            await guarded(
                lambda: self.redis.set(self.keys.lease(shard), worker, nx=True, px=ttl_ms), "taking a lease"
            )
        )

    async def renew(self, shard: int, worker: str, ttl_ms: int) -> bool:
        return await self._if_holder(shard, worker, lambda pipe: pipe.pexpire(self.keys.lease(shard), ttl_ms))

    async def release(self, shard: int, worker: str) -> None:
        await self._if_holder(shard, worker, lambda pipe: pipe.delete(self.keys.lease(shard)))

    async def leave(self, worker: str) -> None:
        await guarded(lambda: self.redis.zrem(self.keys.workers, worker), "leaving")

    async def _if_holder(self, shard: int, worker: str, act: object) -> bool:
        """Run `act` on the lease only if `worker` holds it (checked and done atomically)."""
        key = self.keys.lease(shard)

        async def attempt() -> bool:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    holder = await pipe.get(key)
                    if holder is None or (holder.decode() if isinstance(holder, bytes) else holder) != worker:
                        await pipe.unwatch()
                        return False
                    pipe.multi()
                    act(pipe)  # type: ignore[operator]
                    await pipe.execute()
                    return True
                except redis_errors.WatchError:
                    return False  # it changed hands while we looked

        return await guarded(attempt, "checking a lease")


class RedisLeader:
    """One holder at a time of a named lease (the alert dispatcher): take it or keep it, each call."""

    def __init__(self, redis: aioredis.Redis, key: str, holder: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = key
        self.holder = holder
        self.ttl_ms = ttl_ms

    async def lead(self) -> bool:
        """True while this holder has the lease (renewed by this call)."""

        async def attempt() -> bool | None:
            if await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms):
                return True
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.key)
                    current = await pipe.get(self.key)
                    if (current.decode() if isinstance(current, bytes) else current) != self.holder:
                        await pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.pexpire(self.key, self.ttl_ms)
                    await pipe.execute()
                    return True
                except redis_errors.WatchError:
                    return None  # it changed while we looked: look again

        for _ in range(3):
            result = await guarded(attempt, "taking the dispatcher lease")
            if result is not None:
                return result
        return False
