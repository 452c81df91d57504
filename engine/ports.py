"""The storage ports the engine needs; `storage/` implements them.

Each port is small. The composition root (`bot/app.py`) builds the concrete adapters
and hands them to the engine; the engine never imports `storage`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from engine.alerting.alerts import Alert, AlertChange
from engine.alerting.risk import ChangeRef
from engine.detection.detect import Anomaly
from engine.signal import Signal


@dataclass(slots=True)
class QueuedSignal:
    """A signal read from the stream, with what is needed to acknowledge it."""

    entry_id: str
    signal: Signal
    received_at: float
    shard: int = 0


class SignalQueue(Protocol):
    """The stream between ingest and the workers (Redis Streams in production)."""

    async def publish(self, signals: Sequence[Signal], received_at: float) -> list[str]:
        """Append signals (several may share an entry); return the entry ids. Raises QueueUnavailable."""
        ...

    async def read(
        self, consumer: str, count: int, block_ms: int, shards: Sequence[int] | None = None
    ) -> list[QueuedSignal]:
        """Signals of up to `count` new entries per shard (all shards by default), pending until acked."""
        ...

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int, shards: Sequence[int] | None = None
    ) -> list[QueuedSignal]:
        """Take over entries another consumer read but did not ack for `min_idle_ms`."""
        ...

    async def ack(self, entries: Sequence[QueuedSignal]) -> None:
        """Mark entries done; only after their effects are committed."""
        ...

    async def dead_letter(self, entry: QueuedSignal, error: str) -> None:
        """Set aside a signal that cannot be processed, with why, for a person to look at."""
        ...

    async def ping(self) -> bool:
        """True when the stream answers."""
        ...


class RecordTransaction(Protocol):
    """One atomic unit of recording: everything in it commits together or not at all."""

    async def add_signals(self, signals: Sequence[tuple[Signal, float]]) -> set[str]:
        """Record (signal, received_at) pairs; return the ids that were not recorded before."""
        ...

    async def open_alerts(self, keys: Sequence[str]) -> dict[str, Alert]:
        """Alerts not yet resolved, by group key (as this transaction sees them)."""
        ...

    async def recorded_extent(self, series: Sequence[str]) -> dict[str, tuple[float, int]]:
        """Each series' latest recorded time and how many signals it has recorded (from the
        series catalogue; a series never recorded is absent)."""
        ...

    async def points_after(self, series: str, after: float, limit: int) -> list[tuple[Signal, float]]:
        """(signal, received_at) of a series' metric points recorded with a time after `after`,
        in the order they were recorded (at most `limit`)."""
        ...

    async def latest_points(self, series: str, limit: int) -> list[tuple[Signal, float]]:
        """(signal, received_at) of a series' latest `limit` metric points (by time), in the
        order they were recorded."""
        ...

    async def add_anomalies(self, anomalies: Sequence[Anomaly]) -> None:
        """Record anomalies (idempotent by id)."""
        ...

    async def recent_changes(self, services: Sequence[str], since: float) -> list[ChangeRef]:
        """Changes (deploys, flag flips…) recorded for these services since `since`."""
        ...

    async def open_alerts_of_services(self, services: Sequence[str]) -> list[Alert]:
        """Alerts not yet resolved on these services."""
        ...

    async def last_time(self, alert: Alert) -> Alert | None:
        """The most similar past alert that ended before this one started: the same series or
        group first, then the same service and title; one with a resolution note before one
        without; the latest of those (None: nothing similar ever ended)."""
        ...

    async def beat(self, name: str, ts: float) -> None:
        """Note that the heartbeat alert `name` arrived (keeps the latest time)."""
        ...

    async def write_alerts(self, changes: Sequence[AlertChange]) -> frozenset[str]:
        """Apply alert changes; return the ids of those that took effect.

        An opening can lose a race with another worker opening the same group, and an
        update can be stale; only the changes returned should be announced.
        """
        ...


class SignalRecord(Protocol):
    """The durable record (SQLite in production)."""

    def transaction(self) -> AbstractAsyncContextManager[RecordTransaction]:
        """A write transaction, committed when the block exits normally."""
        ...

    async def firing_alerts(self, limit: int = 50) -> list[Alert]:
        """Open alerts, most severe and recent first."""
        ...

    async def recent_anomalies(self, since: float, limit: int = 50) -> list[Anomaly]:
        """Anomalies since `since`, newest first."""
        ...

    async def ping(self) -> bool:
        """True when the record answers."""
        ...


class DetectorStateStore(Protocol):
    """Where per-series detector state survives restarts (Redis in production)."""

    async def load(self, series: Sequence[str]) -> dict[str, bytes]:
        """Saved states for these series (missing ones are absent)."""
        ...

    async def save(self, states: Mapping[str, bytes]) -> None:
        """Save states; the last write wins."""
        ...


class AlertSink(Protocol):
    """Where alert notifications go (console now; chat notifiers later)."""

    async def notify(self, alert: Alert, change: str) -> None:
        """Tell people about a new, updated or resolved alert."""
        ...
