"""Series ownership: each shard of the stream is read by one worker at a time.

A series always hashes to the same shard, so the worker leasing a shard is the only
one holding that series' detector state. Workers heartbeat, aim for an even share
(`ceil(shards / live workers)`), renew their leases, give back extras (after saving
state) and take over shards whose lease lapsed, such as a dead worker's.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


def shard_of(series: str, shards: int) -> int:
    """The shard a series belongs to (stable across processes and restarts)."""
    return zlib.crc32(series.encode()) % shards if shards > 1 else 0


class ShardLeases(Protocol):
    """Leases on shards (Redis in production)."""

    async def heartbeat(self, worker: str, now: float, ttl_ms: int) -> int:
        """Say this worker is alive; return how many workers are."""
        ...

    async def try_acquire(self, shard: int, worker: str, ttl_ms: int) -> bool: ...

    async def renew(self, shard: int, worker: str, ttl_ms: int) -> bool:
        """Extend the lease if this worker still holds it."""
        ...

    async def release(self, shard: int, worker: str) -> None: ...

    async def leave(self, worker: str) -> None:
        """This worker stops (its leases are released separately)."""
        ...


@dataclass(frozen=True, slots=True)
class Rebalance:
    gained: frozenset[int]
    released: frozenset[int]  # given back on purpose: save their state first
    lost: frozenset[int]  # lapsed under us: someone else may own them now


@dataclass
class Ownership:
    """The shards one worker holds, kept fair and fresh by `rebalance`."""

    worker: str
    shards: int
    leases: ShardLeases
    ttl_ms: int = 10_000
    clock: Callable[[], float] = time.time
    owned: set[int] = field(default_factory=set)

    async def rebalance(self) -> Rebalance:
        alive = await self.leases.heartbeat(self.worker, self.clock(), self.ttl_ms)
        target = math.ceil(self.shards / max(1, alive))
        lost = {s for s in sorted(self.owned) if not await self.leases.renew(s, self.worker, self.ttl_ms)}
        self.owned -= lost
        released: set[int] = set()
        while len(self.owned) > target:
            released.add(self.owned.pop())
        gained: set[int] = set()
        free = [s for s in range(self.shards) if s not in self.owned and s not in released]
        random.shuffle(free)  # workers starting together should not all race for shard 0
        for shard in free:
            if len(self.owned) >= target:
                break
            if await self.leases.try_acquire(shard, self.worker, self.ttl_ms):
                self.owned.add(shard)
                gained.add(shard)
        return Rebalance(frozenset(gained), frozenset(released), frozenset(lost))

    async def release(self, shards: set[int] | frozenset[int]) -> None:
        for shard in shards:
            await self.leases.release(shard, self.worker)
            self.owned.discard(shard)

    async def leave(self) -> None:
        await self.release(set(self.owned))
        await self.leases.leave(self.worker)
