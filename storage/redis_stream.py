"""Redis Streams as the signal queue: XADD at ingest, consumer groups for the workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.typing import EncodableT, FieldT

from engine.errors import QueueUnavailable
from engine.intake.ownership import shard_of
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


def connect_sentinel(
    sentinels: Sequence[tuple[str, int]],
    master: str,
    *,
    db: int = 0,
    password: str | None = None,
    timeout_s: float = 5.0,
) -> aioredis.Redis:
    """A client of the master that Sentinel names now: after a failover it finds the new one
    by itself (redis-py's SentinelConnectionPool), with the same timeouts and retry as `connect`."""
    sentinel = Sentinel(
        list(sentinels),
        socket_timeout=min(timeout_s, 2.0),
        socket_connect_timeout=min(timeout_s, 2.0),
        sentinel_kwargs={"socket_timeout": min(timeout_s, 2.0), "password": password},
    )
    return sentinel.master_for(
        master,
        db=db,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=min(timeout_s, 2.0),
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

# Every entry of one request, whatever its shards, in one command, and the entries of the
# requests that arrive while one is under way in the next: KEYS are the entries' streams (a
# stream once per entry), ARGV the stream length bound, then each entry's receive time and
# body. Each command costs redis-py ~50 µs of Python (packing, a timed read) and a send on
# the socket, so one XADD per shard in a pipeline was a third of what ingest spent per
# request at 8 shards. All the streams share the prefix's hash tag where a Cluster needs one
# (README).
PUBLISH_SCRIPT = """
local ids = {}
for i, key in ipairs(KEYS) do
  ids[i] = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'b', ARGV[2 * i + 1], 'r', ARGV[2 * i])
end
return ids
"""
# Publish commands under way at once; calls made meanwhile wait and go together in the next.
# Measured on 2 cores, server alone: requests of 10 signals, 16 at a time, 61-66k signals/s
# instead of 48k; of 100, 4 or 8 at a time, the same as one command each (within the noise).
# Two at once did no better than one.
ROUNDS_IN_FLIGHT = 1
# Entries in one command at most (a round of calls that waited): the script runs in one go,
# and Redis serves nothing else meanwhile.
ROUND_ENTRIES = 256


@dataclass(slots=True)
class _Publication:
    """One publish call's entries, waiting for the command that carries them."""

    streams: list[str]
    args: list[EncodableT]  # receive time, body, for each entry
    done: asyncio.Future[list[Any]]


class RedisSignalQueue:
    """The `SignalQueue` port on Redis streams: one per shard, each with a consumer group.

    A series always goes to the same shard (`shard_of`), so the worker holding a shard's
    lease is the only one reading that series. Each entry carries up to `chunk` signals
    as one JSON array; `maxlen` bounds each shard's stream in entries (approximately:
    Redis trims whole nodes).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        maxlen: int,
        shards: int = 1,
        chunk: int = CHUNK,
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> None:
        if shards < 1:
            raise ValueError("a queue needs at least one shard")
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self.shards = shards
        self.chunk = chunk
        # Signals are acknowledged to the sender only once this many replicas have them: a master
        # that dies right after answering (a Sentinel failover) then loses nothing acknowledged.
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self._ready: set[int] = set()
        self._reclaim_cursors: dict[int, str] = {}
        self._publish = redis.register_script(PUBLISH_SCRIPT)  # loads itself again after NOSCRIPT
        self._waiting: list[_Publication] = []
        self._in_flight = 0  # publish commands under way
        self._rounds: set[asyncio.Task[None]] = set()

    def _all(self, shards: Sequence[int] | None) -> Sequence[int]:
        return range(self.shards) if shards is None else shards

    async def ensure_group(self, shards: Sequence[int] | None = None) -> None:
        """Create the shard streams and their consumer groups if they do not exist yet."""
        for shard in self._all(shards):
            if shard in self._ready:
                continue
            try:
                await guarded(
                    lambda s=shard: self.redis.xgroup_create(  # type: ignore[misc]
                        self.keys.stream(s), self.keys.group, id="0", mkstream=True
                    ),
                    "creating a consumer group",
                )
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._ready.add(shard)

    def _group_lost(self, exc: redis_errors.ResponseError) -> None:
        """A stream or its group vanished (Redis restarted empty): recreate them at the next call."""
        if "NOGROUP" not in str(exc):
            raise exc
        if self._ready:
            log.info("signal stream consumer group missing (Redis restarted empty?); recreating it")
        self._ready.clear()
        self._reclaim_cursors.clear()

    async def publish(self, signals: Sequence[Signal], received_at: float) -> list[str]:
        """Add the signals to their shards' streams; return the entries' ids once Redis (and
        `min_replicas` replicas) has them. Calls made while `ROUNDS_IN_FLIGHT` commands are
        under way go out together in the next (a round): each still returns only when its own
        entries are in."""
        received = repr(received_at).encode()
        by_shard: dict[int, list[Signal]] = {}
        for signal in signals:
            by_shard.setdefault(shard_of(signal.series, self.shards), []).append(signal)
        streams: list[str] = []
        args: list[EncodableT] = []
        for shard, group in by_shard.items():
            for i in range(0, len(group), self.chunk):
                streams.append(self.keys.stream(shard))
                args += (received, signals_to_json(group[i : i + self.chunk]))
        if not streams:
            return []
        if not self._waiting and self._in_flight < ROUNDS_IN_FLIGHT:  # a command can go now: this one
            self._in_flight += 1
            try:
                ids = await self._send(streams, [self.maxlen, *args])
            finally:
                self._in_flight -= 1
                self._start_rounds()
        else:  # wait for a command to finish, and go in the next with the others waiting
            publication = _Publication(streams, args, asyncio.get_running_loop().create_future())
            self._waiting.append(publication)
            self._start_rounds()
            ids = await publication.done
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def _start_rounds(self) -> None:
        """Send what is waiting, in rounds of up to `ROUND_ENTRIES` entries, while fewer than
        `ROUNDS_IN_FLIGHT` commands are under way."""
        while self._waiting and self._in_flight < ROUNDS_IN_FLIGHT:
            size, count = 0, 0
            for publication in self._waiting:
                if count and size + len(publication.streams) > ROUND_ENTRIES:
                    break
                size, count = size + len(publication.streams), count + 1
            round_, self._waiting = self._waiting[:count], self._waiting[count:]
            self._in_flight += 1
            task = asyncio.create_task(self._send_round(round_))
            self._rounds.add(task)  # held until done (the loop keeps only weak references)
            task.add_done_callback(self._rounds.discard)

    async def _send_round(self, round_: list[_Publication]) -> None:
        """One command for a round's entries; its outcome (the ids, or the error) goes to every
        call in it."""
        try:
            keys = [key for p in round_ for key in p.streams]
            ids = await self._send(keys, [self.maxlen, *(arg for p in round_ for arg in p.args)])
        except asyncio.CancelledError:  # shutting down: nothing more goes out
            for publication in [*round_, *self._waiting]:
                publication.done.cancel()
            self._waiting.clear()
            self._in_flight -= 1
            raise
        except Exception as exc:  # every caller of the round hears of it
            for publication in round_:
                if not publication.done.done():
                    publication.done.set_exception(exc)
        else:
            start = 0
            for publication in round_:
                end = start + len(publication.streams)
                if not publication.done.done():  # its caller may have gone (a cancelled request)
                    publication.done.set_result(ids[start:end])
                start = end
        self._in_flight -= 1
        self._start_rounds()

    async def _send(self, streams: list[str], args: list[EncodableT]) -> list[Any]:
        async def send() -> list[Any]:
            return list(await self._publish(keys=streams, args=args))

        ids = await guarded(send, "publishing signals")
        if self.min_replicas:
            copies = await guarded(
                partial(self.redis.wait, self.min_replicas, self.replica_timeout_ms), "waiting for replicas"
            )
            if copies < self.min_replicas:
                raise QueueUnavailable(
                    f"only {copies} of {self.min_replicas} Redis replicas confirmed the signals within "
                    f"{self.replica_timeout_ms} ms; not acknowledged, resend (a resend is recorded once)"
                )
        return ids

    async def read(
        self, consumer: str, count: int, block_ms: int, shards: Sequence[int] | None = None
    ) -> list[QueuedSignal]:
        wanted = list(self._all(shards))
        if not wanted:
            return []
        await self.ensure_group(wanted)
        streams: dict[Any, Any] = {self.keys.stream(shard): ">" for shard in wanted}
        try:
            reply = await guarded(
                lambda: self.redis.xreadgroup(
                    self.keys.group, consumer, streams, count=count, block=block_ms
                ),
                "reading signals",
            )
        except redis_errors.ResponseError as exc:
            self._group_lost(exc)
            return []
        if not reply:
            return []
        # RESP2 gives [[stream, entries]], RESP3 a dict {stream: [entries]}.
        pairs = reply.items() if isinstance(reply, dict) else reply
        return [q for stream, entries in pairs for q in _decode(entries, self._shard_of_stream(stream))]

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int, shards: Sequence[int] | None = None
    ) -> list[QueuedSignal]:
        out: list[QueuedSignal] = []
        for shard in self._all(shards):
            await self.ensure_group([shard])
            try:
                reply = await guarded(
                    lambda s=shard: self.redis.xautoclaim(  # type: ignore[misc]
                        self.keys.stream(s),
                        self.keys.group,
                        consumer,
                        min_idle_time=min_idle_ms,
                        start_id=self._reclaim_cursors.get(s, "0-0"),
                        count=count,
                    ),
                    "reclaiming pending signals",
                )
            except redis_errors.ResponseError as exc:
                self._group_lost(exc)
                continue
            cursor, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            self._reclaim_cursors[shard] = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            if deleted:
                # Trimmed by MAXLEN before anyone recorded them: acknowledge, and say so loudly.
                log.error(
                    "%d pending signals were trimmed from shard %d before they were recorded; "
                    "raise SIGOPS_STREAM_MAXLEN or add workers",
                    len(deleted),
                    shard,
                )
                stream = self.keys.stream(shard)
                ids = [d.decode() if isinstance(d, bytes) else str(d) for d in deleted]
                await guarded(partial(self.redis.xack, stream, self.keys.group, *ids), "acknowledging")
            out += _decode(entries, shard)
        return out

    async def ack(self, entries: Sequence[QueuedSignal]) -> None:
        by_shard: dict[int, list[str]] = {}
        for entry in entries:
            ids = by_shard.setdefault(entry.shard, [])
            if not ids or ids[-1] != entry.entry_id:  # signals of one chunk share an entry
                ids.append(entry.entry_id)
        for shard, ids in by_shard.items():
            unique = list(dict.fromkeys(ids))
            await guarded(
                lambda s=shard, u=unique: self.redis.xack(self.keys.stream(s), self.keys.group, *u),  # type: ignore[misc]
                "acknowledging signals",
            )

    def _shard_of_stream(self, stream: Any) -> int:
        name = stream.decode() if isinstance(stream, bytes) else str(stream)
        return int(name.rsplit(":", 1)[1])

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

    async def dead_letters(self, limit: int = 50) -> list[tuple[float, Signal, str]]:
        """Signals set aside, newest first: (when, the signal, the error)."""
        reply = await guarded(
            lambda: self.redis.xrevrange(self.keys.dead_letters, count=limit), "reading dead letters"
        )
        rows: list[Any] = list(reply or [])
        out = []
        for entry_id, fields in rows:
            ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            error = fields.get(b"error", b"")
            text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
            body = fields[b"b"]
            for signal in signals_from_json(body.encode() if isinstance(body, str) else body):
                out.append((int(ident.split("-")[0]) / 1000, signal, text))
        return out

    async def ping(self) -> bool:
        try:
            return bool(await guarded(self.redis.ping, "pinging"))
        except QueueUnavailable:
            return False

    async def pending_count(self) -> int:
        """Entries read by some worker and not acknowledged yet, over all shards."""
        await self.ensure_group()
        total = 0
        for shard in range(self.shards):
            try:
                info = await guarded(
                    lambda s=shard: self.redis.xpending(self.keys.stream(s), self.keys.group),  # type: ignore[misc]
                    "counting pending",
                )
            except redis_errors.ResponseError as exc:
                self._group_lost(exc)
                continue
            total += int(info["pending"] if isinstance(info, dict) else info[0])
        return total

    async def shard_stats(self) -> list[tuple[int, int, int]]:
        """(shard, pending, lag) of the workers' group on each shard: read but not acknowledged,
        and not read yet (Redis 7's XINFO GROUPS `lag`; the stream's length when it is unknown)."""
        stats = []
        for shard in range(self.shards):
            stream = self.keys.stream(shard)
            try:
                groups = await guarded(partial(self.redis.xinfo_groups, stream), "reading stream info")
            except redis_errors.ResponseError:  # no stream yet
                stats.append((shard, 0, 0))
                continue
            mine = next((g for g in groups if _text(g.get("name")) == self.keys.group), None)
            if mine is None:
                length = await guarded(partial(self.redis.xlen, stream), "reading a stream's length")
                stats.append((shard, 0, int(length)))
                continue
            lag = mine.get("lag")
            stats.append((shard, int(mine.get("pending") or 0), int(lag) if lag is not None else 0))
        return stats


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(entries: Sequence[Any], shard: int) -> list[QueuedSignal]:
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
        out += [QueuedSignal(ident, signal, received, shard) for signal in signals]
    return out
