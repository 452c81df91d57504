"""The storage ports the engine needs; `storage/` implements them.

Each port is small. The composition root (`bot/app.py`) builds the concrete adapters
and hands them to the engine; the engine never imports `storage`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.alerts import Alert, AlertChange
from engine.detect import Anomaly
from engine.signal import Signal


@dataclass(frozen=True, slots=True)
class QueuedSignal:
    """A signal read from the stream, with what is needed to acknowledge it."""

    entry_id: str
    signal: Signal
    received_at: float


class SignalQueue(Protocol):
    """The stream between ingest and the workers (Redis Streams in production)."""

    async def publish(self, signals: Sequence[Signal], received_at: float) -> list[str]:
        """Append signals; return their stream entry ids. Raises QueueUnavailable."""
        ...

    async def read(self, consumer: str, count: int, block_ms: int) -> list[QueuedSignal]:
        """New entries for this consumer (they stay pending until acked)."""
        ...

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[QueuedSignal]:
        """Take over entries another consumer read but did not ack for `min_idle_ms`."""
        ...

    async def ack(self, entry_ids: Sequence[str]) -> None:
        """Mark entries done; only after their effects are committed."""
        ...

    async def ping(self) -> bool:
        """True when the stream answers."""
        ...


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """What one worker batch commits in one transaction."""

    signals: Sequence[tuple[Signal, float]]  # (signal, received_at)
    anomalies: Sequence[Anomaly]
    alerts: Sequence[AlertChange]


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit changed: new signals, and the alert changes that took effect.

    An alert opening can lose a race with another worker opening the same group;
    only the changes listed here should be announced.
    """

    new_signals: int
    applied_alerts: frozenset[str]


class SignalRecord(Protocol):
    """The durable record (SQLite in production)."""

    async def new_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these signal ids are not recorded yet."""
        ...

    async def commit(self, batch: RecordBatch) -> CommitResult:
        """Record a batch atomically (signals by id, once)."""
        ...

    async def open_alerts(self, keys: Sequence[str]) -> dict[str, Alert]:
        """Alerts not yet resolved, by group key."""
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
