"""Workers: the stream consumers of a process, each under its own shard leases."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from bot.runtime import Runtime, _host_tag
from engine.intake.ownership import Ownership
from engine.intake.worker import Worker, WorkerConfig
from storage.redis_lease import RedisShardLeases

log = logging.getLogger(__name__)


def start_workers(rt: Runtime, stop: asyncio.Event, count: int, prefix: str = "worker") -> None:
    """Start `count` worker tasks on the runtime's stream."""
    config = WorkerConfig(batch_size=rt.settings.worker_batch, reclaim_idle_ms=rt.settings.reclaim_idle_ms)
    host = _host_tag()
    for index in range(count):
        name = f"{prefix}-{host}-{index}"
        ownership = Ownership(
            name, rt.settings.shards, RedisShardLeases(rt.redis, rt.keys), rt.settings.lease_ms
        )
        worker = Worker(name, rt.queue, rt.processor, rt.sink, config, ownership=ownership)
        rt.supervisor.spawn(worker.name, partial(worker.run, stop), stop)
