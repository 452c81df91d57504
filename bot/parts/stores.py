"""The record and Redis: the stores every part of a process shares, and detection on them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from bot.parts.detection import build_detection
from bot.settings import Settings
from engine.alerting.alerts import AlertPolicy
from engine.errors import QueueUnavailable
from engine.intake.worker import SignalProcessor
from storage.keys import Keys
from storage.postgres import PostgresRecord
from storage.record import Record
from storage.redis_state import RedisDetectorStateStore
from storage.redis_stream import RedisSignalQueue, connect, connect_sentinel
from storage.sqlite import SqliteRecord

log = logging.getLogger(__name__)


def make_redis(settings: Settings) -> tuple[aioredis.Redis, bool]:
    """The configured Redis, or an in-process stand-in when none is configured."""
    if settings.redis_sentinels:
        sentinels = [(h, int(p)) for h, _, p in (a.rpartition(":") for a in settings.redis_sentinels)]
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        return (
            connect_sentinel(
                sentinels, settings.redis_sentinel_master, db=settings.redis_db, password=password
            ),
            False,
        )
    if settings.redis_url:
        return connect(settings.redis_url), False
    import fakeredis  # only the embedded default needs it

    return fakeredis.FakeAsyncRedis(), True


@dataclass(frozen=True, slots=True)
class Stores:
    """Redis (or its in-process stand-in), the signal stream on it, and the durable record."""

    redis: aioredis.Redis
    embedded: bool
    keys: Keys
    queue: RedisSignalQueue
    record: Record


async def open_stores(settings: Settings, sqlite_path: Path | None = None) -> Stores:
    """Connect Redis and open the record; Redis may still be down (ingest answers 503 meanwhile)."""
    redis, embedded = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    queue = RedisSignalQueue(
        redis,
        keys,
        maxlen=settings.stream_maxlen,
        shards=settings.shards,
        min_replicas=settings.redis_min_replicas,
    )
    record = await open_record(settings, sqlite_path)
    try:
        await queue.ensure_group()
    except QueueUnavailable as exc:
        log.warning("Redis not reachable yet (%s); ingest answers 503 and workers wait until it is", exc)
    return Stores(redis, embedded, keys, queue, record)


def build_processor(settings: Settings, stores: Stores) -> SignalProcessor:
    """Detect → decide → record, shared by this process's workers."""
    states = RedisDetectorStateStore(stores.redis, stores.keys)
    return SignalProcessor(
        stores.record, states, build_detection(settings), AlertPolicy(heartbeats=heartbeats_of(settings))
    )


def heartbeats_of(settings: Settings) -> frozenset[str]:
    return frozenset({settings.watchdog_alertname}) if settings.watchdog_alertname else frozenset()


async def open_record(settings: Settings, sqlite_path: Path | None = None) -> Record:
    """The record: PostgreSQL when SIGOPS_DATABASE_URL is set, else the SQLite file."""
    if settings.database_url is not None:
        return await PostgresRecord.open(
            settings.database_url.get_secret_value(), pool_size=settings.database_pool_size
        )
    return await SqliteRecord.open(sqlite_path or settings.sqlite_path)
