"""Redis Streams as the signal queue: XADD at ingest, consumer groups for the workers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.typing import EncodableT, FieldT

from engine.errors import QueueUnavailable
from engine.ports import QueuedSignal
from engine.signal import Signal, signals_from_json, signals_to_json
from storage.keys import DEAD_LETTERS_MAXLEN, Keys

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "Redis is not there right now", as opposed to a bug in our call.
UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
)


def connect(url: str, *, timeout_s: float = 5.0) -> aioredis.Redis:
    """A Redis client with timeouts on every call and a short, bounded retry."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=min(timeout_s, 2.0),
        socket_timeout=timeout_s,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[redis_errors.ConnectionError],
    )


async def guarded(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a Redis call, mapping "Redis is unreachable" to QueueUnavailable."""
    try:
        return await call()
    except UNAVAILABLE as exc:
        raise QueueUnavailable(f"Redis unavailable while {what}: {exc}") from exc
    except redis_errors.ResponseError as exc:
        if str(exc).startswith(("OOM", "LOADING", "MASTERDOWN", "READONLY")):
            raise QueueUnavailable(f"Redis refused {what}: {exc}") from exc
        raise


# Signals per stream entry. One XADD per signal costs ~30 µs of client time in Python,
# one per chunk ~1 µs per signal; acks and reclaims then work per chunk.
CHUNK = 100


class RedisSignalQueue:
    """The `SignalQueue` port on a Redis stream with one consumer group.

    Each entry carries up to `chunk` signals as one JSON array; `maxlen` bounds the
    number of entries (approximately, as Redis trims whole nodes).
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, maxlen: int, chunk: int = CHUNK) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.chunk = chunk
        self._group_ready = False
        self._reclaim_cursor = "0-0"

    async def ensure_group(self) -> None:
        """Create the stream and the consumer group if they do not exist yet."""
        try:
            await guarded(
                lambda: self.redis.xgroup_create(self.keys.signals, self.keys.group, id="0", mkstream=True),
                "creating the consumer group",
            )
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def publish(self, signals: Sequence[Signal], received_at: float) -> list[str]:
        received = repr(received_at).encode()
        bodies = [signals_to_json(signals[i : i + self.chunk]) for i in range(0, len(signals), self.chunk)]

        async def send() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for body in bodies:
                    pipe.xadd(
                        self.keys.signals,
                        {b"b": body, b"r": received},
                        maxlen=self.maxlen,
                        approximate=True,
                    )
                return await pipe.execute()

        ids = await guarded(send, "publishing signals")
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def read(self, consumer: str, count: int, block_ms: int) -> list[QueuedSignal]:
        if not self._group_ready:
            await self.ensure_group()
        try:
            reply = await guarded(
                lambda: self.redis.xreadgroup(
                    self.keys.group, consumer, {self.keys.signals: ">"}, count=count, block=block_ms
                ),
                "reading signals",
            )
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was deleted under us; recreate next time
            return []
        if not reply:
            return []
        # RESP2 gives [[stream, entries]], RESP3 a dict {stream: [entries]}.
        streams = reply.items() if isinstance(reply, dict) else reply
        return [q for _, entries in streams for q in _decode(entries)]

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[QueuedSignal]:
        if not self._group_ready:
            await self.ensure_group()
        reply = await guarded(
            lambda: self.redis.xautoclaim(
                self.keys.signals,
                self.keys.group,
                consumer,
                min_idle_time=min_idle_ms,
                start_id=self._reclaim_cursor,
                count=count,
            ),
            "reclaiming pending signals",
        )
        cursor, entries = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        self._reclaim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if deleted:
            # Trimmed by MAXLEN before anyone recorded them: acknowledge, and say so loudly.
            log.error(
                "%d pending signals were trimmed from the stream before they were recorded; "
                "raise SIGOPS_STREAM_MAXLEN or add workers",
                len(deleted),
            )
            await self.ack([d.decode() if isinstance(d, bytes) else str(d) for d in deleted])
        return _decode(entries)

    async def ack(self, entry_ids: Sequence[str]) -> None:
        unique = list(dict.fromkeys(entry_ids))  # signals of one chunk share an entry
        if unique:
            await guarded(
                lambda: self.redis.xack(self.keys.signals, self.keys.group, *unique),
                "acknowledging signals",
            )

    async def dead_letter(self, entry: QueuedSignal, error: str) -> None:
        fields: dict[FieldT, EncodableT] = {
            b"b": signals_to_json([entry.signal]),
            b"entry": entry.entry_id.encode(),
            b"error": error[:2000].encode(),
        }
        await guarded(
            lambda: self.redis.xadd(
                self.keys.dead_letters,
                fields,
                maxlen=DEAD_LETTERS_MAXLEN,
                approximate=True,
            ),
            "setting a signal aside",
        )

    async def ping(self) -> bool:
        try:
            return bool(await guarded(self.redis.ping, "pinging"))
        except QueueUnavailable:
            return False

    async def pending_count(self) -> int:
        """Entries read by some worker and not acknowledged yet."""
        info = await guarded(
            lambda: self.redis.xpending(self.keys.signals, self.keys.group), "counting pending"
        )
        return int(info["pending"] if isinstance(info, dict) else info[0])


def _decode(entries: Sequence[Any]) -> list[QueuedSignal]:
    out = []
    for entry_id, fields in entries:
        if not fields:
            continue  # deleted entry (XAUTOCLAIM on old servers returns it with no fields)
        raw = fields.get(b"b") or fields.get("b")
        received = float(fields.get(b"r") or fields.get("r") or 0)
        ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        try:
            signals = signals_from_json(raw)
        except (orjson.JSONDecodeError, TypeError) as exc:
            # Not ours (another writer on the stream); say so, never crash the worker.
            log.error("skipping unreadable stream entry %s: %s", ident, exc)
            continue
        out += [QueuedSignal(ident, signal, received) for signal in signals]
    return out
