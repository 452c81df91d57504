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
