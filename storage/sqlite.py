"""The durable record in SQLite (aiosqlite, WAL): signals, anomalies, alerts.

The schema is versioned with `PRAGMA user_version`; `MIGRATIONS[i]` takes version i to
i + 1 and runs once, in order, at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from engine.alerting.alerts import Alert, AlertChange
from engine.alerting.risk import ChangeRef
from engine.detection.detect import Anomaly
from engine.errors import RecordUnavailable
from engine.signal import Signal

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: signals, anomalies, alerts
    """
    CREATE TABLE signals (
        id TEXT NOT NULL,
        ts REAL NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        series TEXT NOT NULL,
        value REAL,
        labels TEXT NOT NULL,
        text TEXT,
        severity TEXT NOT NULL,
        received_at REAL NOT NULL,
        recorded_at REAL NOT NULL
    );
    -- One index serves both "once per signal" and "this series over time"; a unique
    -- index on the random id alone costs about twice as much per insert.
    CREATE UNIQUE INDEX signals_series_ts_id ON signals (series, ts, id);
    CREATE INDEX signals_ts ON signals (ts);
    CREATE TABLE anomalies (
        id TEXT PRIMARY KEY,
        signal_id TEXT NOT NULL,
        ts REAL NOT NULL,
        series TEXT NOT NULL,
        service TEXT NOT NULL,
        value REAL NOT NULL,
        expected REAL NOT NULL,
        lower REAL NOT NULL,
        upper REAL NOT NULL,
        score REAL NOT NULL,
        detectors TEXT NOT NULL,
        explanation TEXT NOT NULL,
        labels TEXT NOT NULL
    );
    CREATE INDEX anomalies_ts ON anomalies (ts);
    CREATE INDEX anomalies_series_ts ON anomalies (series, ts);
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        series TEXT NOT NULL,
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        resolved_at REAL,
        score REAL NOT NULL,
        value REAL,
        expected REAL,
        lower REAL,
        upper REAL,
        explanation TEXT NOT NULL,
        labels TEXT NOT NULL,
        count INTEGER NOT NULL,
        version INTEGER NOT NULL
    );
    -- At most one open alert per group, even with several workers racing to open it.
    CREATE UNIQUE INDEX alerts_open_group ON alerts (group_key) WHERE status != 'resolved';
    CREATE INDEX alerts_updated ON alerts (updated_at);
    """,
    # 2: flapping alerts
    """
    ALTER TABLE alerts ADD COLUMN flapping INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: risk and related context on alerts; changes kept apart for "what changed before this?"
    """
    ALTER TABLE alerts ADD COLUMN risk REAL NOT NULL DEFAULT 0;
    ALTER TABLE alerts ADD COLUMN context TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE changes (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        service TEXT NOT NULL,
        change_type TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX changes_service_ts ON changes (service, ts);
    """,
    # 4: what people did to alerts; silences; the notification pipeline's log and outbox
    """
    ALTER TABLE alerts ADD COLUMN acked_by TEXT;
    ALTER TABLE alerts ADD COLUMN acked_at REAL;
    ALTER TABLE alerts ADD COLUMN snoozed_until REAL;
    ALTER TABLE alerts ADD COLUMN resolved_by TEXT;
    ALTER TABLE alerts ADD COLUMN note TEXT NOT NULL DEFAULT '';
    CREATE INDEX alerts_status ON alerts (status, updated_at);
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        author TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_at REAL NOT NULL,
        expired_at REAL
    );
    CREATE INDEX silences_ends ON silences (ends_at);
    -- One row per alert group instance: what was last told about it, and when.
    CREATE TABLE notify_groups (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        receiver TEXT NOT NULL,
        labels TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_sent REAL,
        members TEXT NOT NULL,
        version INTEGER NOT NULL,
        closed INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX notify_groups_open ON notify_groups (key) WHERE closed = 0;
    CREATE TABLE notify_log (
        ts REAL NOT NULL,
        group_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        alerts TEXT NOT NULL
    );
    CREATE INDEX notify_log_ts ON notify_log (ts);
    -- The outbox: written before a message is sent, marked with the chat's message id after.
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        group_id TEXT NOT NULL,
        platform TEXT NOT NULL,
        chat TEXT NOT NULL,
        version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        message_id TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        sent_at REAL,
        UNIQUE (group_id, platform, chat, version)
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_at);
    -- The one chat message of a group in a chat, edited in place.
    CREATE TABLE chat_messages (
        group_id TEXT NOT NULL,
        platform TEXT NOT NULL,
        chat TEXT NOT NULL,
        message_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (group_id, platform, chat)
    );
    """,
    # 5: the audit log of what people did from chat
    """
    CREATE TABLE audit (
        ts REAL NOT NULL,
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL
    );
    CREATE INDEX audit_ts ON audit (ts);
    """,
    # 6: documents for question answering (the vector index's ids are their rowids)
    """
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        ref TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        ts REAL NOT NULL,
        service TEXT NOT NULL,
        series TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX documents_ts ON documents (ts);
    CREATE INDEX documents_service_ts ON documents (service, ts);
    CREATE TABLE index_cursors (
        source TEXT PRIMARY KEY,
        position REAL NOT NULL
    );
    """,
    # 7: whether the dispatcher has taken up an alert (one that opened and resolved before any
    # tick is still announced); alerts recorded before this migration count as taken up.
    """
    ALTER TABLE alerts ADD COLUMN told INTEGER NOT NULL DEFAULT 0;
    UPDATE alerts SET told = 1;
    CREATE INDEX alerts_untold ON alerts (told) WHERE told = 0;
    """,
    # 8: the series catalogue, kept in the worker's transaction: the names questions and
    # `chart` may use, known as soon as a signal is recorded
    """
    CREATE TABLE series_catalogue (
        name TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_ts REAL NOT NULL,
        last_ts REAL NOT NULL,
        points INTEGER NOT NULL
    );
    CREATE INDEX series_catalogue_service ON series_catalogue (service);
    INSERT INTO series_catalogue (name, service, kind, first_ts, last_ts, points)
        SELECT series,
            coalesce(nullif(json_extract(max(labels), '$.service'), ''),
                     CASE WHEN instr(series, '.') > 0 THEN substr(series, 1, instr(series, '.') - 1)
                          ELSE series END),
            max(kind), min(ts), max(ts), count(*)
        FROM signals GROUP BY series;
    """,
    # 9: heartbeats (Alertmanager's Watchdog) for the dead-man's switch
    """
    CREATE TABLE heartbeats (
        name TEXT PRIMARY KEY,
        last_ts REAL NOT NULL
    );
    """,
    # 10: the Alertmanager silences made with a SigOps silence (ended with it)
    """
    ALTER TABLE silences ADD COLUMN upstream_ids TEXT NOT NULL DEFAULT '[]';
    """,
]

_SEVERITY_ORDER = "CASE severity WHEN 'critical' THEN 3 WHEN 'error' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END"
_ALERT_COLUMNS = (
    "id, group_key, status, severity, title, series, service, source, started_at, updated_at, "
    "resolved_at, score, value, expected, lower, upper, explanation, labels, count, version, flapping, "
    "risk, context, acked_by, acked_at, snoozed_until, resolved_by, note"
)
_ANOMALY_COLUMNS = (
    "id, signal_id, ts, series, service, value, expected, lower, upper, score, detectors, explanation, labels"
)


async def guarded(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a SQLite call, mapping failures of the database itself to RecordUnavailable."""
    try:
        return await call()
    except (sqlite3.OperationalError, sqlite3.DatabaseError, ValueError) as exc:
        # ValueError: aiosqlite's "no active connection" after close.
        raise RecordUnavailable(f"SQLite failed while {what}: {exc}") from exc


class SqliteRecord:
    """The `SignalRecord` port on one SQLite file."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> SqliteRecord:
        """Open (creating if needed) and migrate the record at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise RecordUnavailable(f"cannot open SQLite file {path}: {exc}") from exc
        record = cls(conn, path)
        try:
            await guarded(lambda: record._configure(busy_timeout_ms), f"opening {path}")
        except BaseException:
            # aiosqlite's worker thread is not a daemon: a connection left open keeps the
            # process alive after main() returns.
            await conn.close()
            raise
        return record

    async def _configure(self, busy_timeout_ms: int) -> None:
        await self.conn.execute("PRAGMA journal_mode=WAL")
        await self.conn.execute("PRAGMA synchronous=NORMAL")
        await self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await self.migrate()

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(script):
                    await self.conn.execute(statement)
                await self.conn.execute(f"PRAGMA user_version={target}")
                await self.conn.execute("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            log.debug("SQLite schema migrated to version %d", target)
        if version < len(MIGRATIONS):
            log.info("SQLite schema at version %d (was %d)", len(MIGRATIONS), version)
        return len(MIGRATIONS)

    async def close(self) -> None:
        await self.conn.close()

    async def last_beat(self, name: str) -> float | None:
        rows = await self._rows(
            "SELECT last_ts FROM heartbeats WHERE name = ?", (name,), "reading a heartbeat"
        )
        return float(rows[0][0]) if rows else None

    async def series_count(self) -> int:
        rows = await self._rows("SELECT count(*) FROM series_catalogue", (), "counting series")
        return int(rows[0][0])

    async def ping(self) -> bool:
        try:
            await self._rows("SELECT 1", (), "pinging")
        except RecordUnavailable:
            return False
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """A write transaction (BEGIN IMMEDIATE), committed at the end of the block.

        One connection runs one transaction at a time: concurrent callers in this process
        wait their turn (other processes wait on SQLite's own lock, `busy_timeout`).
        """
        async with self._write_lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
            except (sqlite3.Error, ValueError) as exc:
                raise RecordUnavailable(f"SQLite failed to start a transaction: {exc}") from exc
            try:
                yield SqliteTransaction(self)
                await guarded(lambda: self.conn.execute("COMMIT"), "committing")
            except BaseException:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self.conn.execute("ROLLBACK")
                raise

    async def open_alerts(self, keys: Sequence[str]) -> dict[str, Alert]:
        rows = await self._select_in(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' AND group_key IN ({{marks}})",
            list(keys),
            "reading open alerts",
        )
        return {a.group_key: a for a in map(_alert_from_row, rows)}

    async def _select_in(
        self, sql: str, values: list[str], what: str, after: Sequence[Any] = ()
    ) -> list[Any]:
        """Run `sql` with `{marks}` bound to `values` (then `after` to later `?`), in chunks."""
        rows: list[Any] = []
        for chunk in _chunks(values, 900):
            query = sql.format(marks=",".join("?" * len(chunk)))
            rows += await self._rows(query, [*chunk, *after], what)
        return rows

    async def _execute_in(self, sql: str, values: list[str]) -> None:
        """Run a write with `{marks}` bound to `values`, in chunks (inside the caller's transaction)."""
        for chunk in _chunks(values, 900):
            await self.conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk)

    async def firing_alerts(self, limit: int = 50) -> list[Alert]:
        rows = await self._rows(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' "
            f"ORDER BY {_SEVERITY_ORDER} DESC, updated_at DESC LIMIT ?",
            (limit,),
            "listing firing alerts",
        )
        return [_alert_from_row(r) for r in rows]

    async def alerts_since(self, since: float, limit: int = 200) -> list[Alert]:
        """Alerts touched since `since`, newest first, whatever their state."""
        rows = await self._rows(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE updated_at >= ? ORDER BY updated_at DESC LIMIT ?",
            (since, limit),
            "listing alerts",
        )
        return [_alert_from_row(r) for r in rows]

    async def recent_anomalies(self, since: float, limit: int = 50) -> list[Anomaly]:
        rows = await self._rows(
            f"SELECT {_ANOMALY_COLUMNS} FROM anomalies WHERE ts >= ? ORDER BY ts DESC LIMIT ?",
            (since, limit),
            "listing anomalies",
        )
        return [_anomaly_from_row(r) for r in rows]

    async def _rows(self, sql: str, params: Sequence[Any], what: str) -> list[Any]:
        """Fetch all rows of one query, mapping SQLite failures to RecordUnavailable."""
        return list(await guarded(lambda: self.conn.execute_fetchall(sql, params), what))

    async def series_points(
        self, series: str, since: float, limit: int = 20_000
    ) -> list[tuple[float, float]]:
        """(ts, value) of one series since `since`, oldest first (the newest `limit`)."""
        rows = await self._rows(
            "SELECT ts, value FROM (SELECT ts, value FROM signals WHERE series = ? AND ts >= ? "
            "AND value IS NOT NULL ORDER BY ts DESC LIMIT ?) ORDER BY ts",
            (series, since, limit),
            "reading a series",
        )
        return [(float(t), float(v)) for t, v in rows]

    async def series_anomalies(self, series: str, since: float, limit: int = 2_000) -> list[Anomaly]:
        """Anomalies of one series since `since`, oldest first."""
        rows = await self._rows(
            f"SELECT {_ANOMALY_COLUMNS} FROM anomalies WHERE series = ? AND ts >= ? ORDER BY ts LIMIT ?",
            (series, since, limit),
            "reading a series' anomalies",
        )
        return [_anomaly_from_row(r) for r in rows]

    async def changes_since(self, service: str, since: float) -> list[ChangeRef]:
        """Changes recorded for a service since `since`, oldest first."""
        rows = await self._rows(
            "SELECT id, ts, service, change_type, text FROM changes WHERE service = ? AND ts >= ? "
            "ORDER BY ts",
            (service, since),
            "reading changes",
        )
        return [ChangeRef(*row) for row in rows]

    async def series_named(self, text: str, limit: int = 10) -> list[str]:
        """Recorded series whose name contains `text` (case-insensitive), exact match first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._rows(
            "SELECT name FROM series_catalogue WHERE name LIKE ? ESCAPE '\\' "
            "ORDER BY lower(name) = lower(?) DESC, length(name) LIMIT ?",
            (pattern, text, limit),
            "finding series",
        )
        return [r[0] for r in rows]

    async def changes_in(self, since: float, until: float) -> list[ChangeRef]:
        """Changes on any service in a window, oldest first."""
        rows = await self._rows(
            "SELECT id, ts, service, change_type, text FROM changes WHERE ts BETWEEN ? AND ? "
            "ORDER BY ts LIMIT 500",
            (since, until),
            "reading changes",
        )
        return [ChangeRef(*row) for row in rows]

    async def latest_labels(self, series: str) -> dict[str, str]:
        """The labels of the newest signal of a series ({} if none)."""
        rows = await self._rows(
            "SELECT labels FROM signals WHERE series = ? ORDER BY ts DESC LIMIT 1",
            (series,),
            "reading labels",
        )
        return dict(orjson.loads(rows[0][0])) if rows else {}

    async def prune(self, before: float, chunk: int = 10_000) -> dict[str, int]:
        """Delete signals, anomalies and changes older than `before`; alerts are kept.

        In chunks, each its own short write transaction, so workers are never held up long.
        """
        removed: dict[str, int] = {}
        for table in ("signals", "anomalies", "changes"):
            total = 0
            while True:
                async with self.transaction():
                    cursor = await guarded(
                        lambda t=table: self.conn.execute(  # type: ignore[misc]
                            f"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE ts < ? LIMIT ?)",
                            (before, chunk),
                        ),
                        f"pruning old {table}",
                    )
                total += cursor.rowcount
                if cursor.rowcount < chunk:
                    break
            removed[table] = total
        async with self.transaction():
            await guarded(
                lambda: self.conn.execute("DELETE FROM series_catalogue WHERE last_ts < ?", (before,)),
                "pruning the series catalogue",
            )
        return removed

    async def catalogue_names(self) -> tuple[list[str], list[str]]:
        """Services and series recorded (the catalogue), for reading names in questions."""
        rows = await self._rows("SELECT name, service FROM series_catalogue", (), "reading the catalogue")
        return sorted({r[1] for r in rows if r[1]}), [r[0] for r in rows]

    async def count(self, table: str) -> int:
        """Rows in one of the record's tables (for status and tests)."""
        if table not in {"signals", "anomalies", "alerts", "changes"}:
            raise ValueError(f"unknown table {table!r}")
        rows = await self._rows(f"SELECT count(*) FROM {table}", (), f"counting {table}")
        return int(next(iter(rows))[0])


class SqliteTransaction:
    """The `RecordTransaction` port inside one SQLite write transaction."""

    # Rows per multi-row INSERT: 11 columns stay well under SQLite's parameter limit.
    ROWS_PER_INSERT = 500

    def __init__(self, record: SqliteRecord) -> None:
        self.record = record
        self.conn = record.conn

    async def add_signals(self, signals: Sequence[tuple[Signal, float]]) -> set[str]:
        now = time.time()
        new: set[str] = set()
        for start in range(0, len(signals), self.ROWS_PER_INSERT):
            part = signals[start : start + self.ROWS_PER_INSERT]
            values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * len(part))
            params = [
                field
                for s, received in part
                for field in (
                    s.id, s.ts, s.source, s.kind, s.series, s.value, orjson.dumps(s.labels).decode(),
                    s.text, s.severity, received, now,
                )
            ]  # fmt: skip
            # OR IGNORE + RETURNING: the ids that are new, in the same statement as the insert.
            rows = await guarded(
                lambda v=values, p=params: self.conn.execute_fetchall(  # type: ignore[misc]
                    "INSERT OR IGNORE INTO signals (id, ts, source, kind, series, value, labels, text, "
                    f"severity, received_at, recorded_at) VALUES {v} RETURNING id",
                    p,
                ),
                "recording signals",
            )
            new.update(r[0] for r in rows)
        await self._catalogue([s for s, _ in signals if s.id in new])
        changes = [
            (s.id, s.ts, s.service, s.labels.get("change_type", "change"), s.text or s.series)
            for s, _ in signals
            if s.kind == "change" and s.id in new
        ]
        if changes:
            await guarded(
                lambda: self.conn.executemany("INSERT OR IGNORE INTO changes VALUES (?,?,?,?,?)", changes),
                "recording changes",
            )
        return new

    async def _catalogue(self, fresh: Sequence[Signal]) -> None:
        """Add the batch's series to the catalogue (first and last time seen, points)."""
        seen: dict[str, list[Any]] = {}
        for s in fresh:
            entry = seen.get(s.series)
            if entry is None:
                seen[s.series] = [s.series, s.service, s.kind, s.ts, s.ts, 1]
            else:
                entry[1], entry[3], entry[4], entry[5] = (
                    s.service,
                    min(entry[3], s.ts),
                    max(entry[4], s.ts),
                    entry[5] + 1,
                )
        if seen:
            await guarded(
                lambda: self.conn.executemany(
                    "INSERT INTO series_catalogue (name, service, kind, first_ts, last_ts, points) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET service = excluded.service, "
                    "first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts), "
                    "points = points + excluded.points",
                    list(seen.values()),
                ),
                "cataloguing series",
            )

    async def recent_changes(self, services: Sequence[str], since: float) -> list[ChangeRef]:
        rows = await self.record._select_in(
            "SELECT id, ts, service, change_type, text FROM changes WHERE service IN ({marks}) "
            "AND ts >= ? ORDER BY ts",
            list(services),
            "reading recent changes",
            after=(since,),
        )
        return [ChangeRef(*row) for row in rows]

    async def open_alerts_of_services(self, services: Sequence[str]) -> list[Alert]:
        rows = await self.record._select_in(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' AND service IN ({{marks}})",
            list(services),
            "reading open alerts of services",
        )
        return [_alert_from_row(r) for r in rows]

    async def open_alerts(self, keys: Sequence[str]) -> dict[str, Alert]:
        return await self.record.open_alerts(keys)

    async def add_anomalies(self, anomalies: Sequence[Anomaly]) -> None:
        if anomalies:
            await guarded(
                lambda: self.conn.executemany(
                    f"INSERT OR IGNORE INTO anomalies ({_ANOMALY_COLUMNS}) VALUES ({','.join('?' * 13)})",
                    [_anomaly_row(a) for a in anomalies],
                ),
                "recording anomalies",
            )

    async def beat(self, name: str, ts: float) -> None:
        await guarded(
            lambda: self.conn.execute(
                "INSERT INTO heartbeats (name, last_ts) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last_ts = max(last_ts, excluded.last_ts)",
                (name, ts),
            ),
            "noting a heartbeat",
        )

    async def write_alerts(self, changes: Sequence[AlertChange]) -> frozenset[str]:
        applied = set()
        for change in changes:
            if await guarded(lambda c=change: self._write_alert(c), "recording alerts"):  # type: ignore[misc]
                applied.add(change.alert.id)
        return frozenset(applied)

    async def _write_alert(self, change: AlertChange) -> bool:
        """Upsert by id: a newer version updates, an unknown alert is inserted whatever its change.

        An alert that opened and resolved inside one batch arrives as `resolved` and must be
        inserted all the same. OR IGNORE: another worker may have opened this group a moment
        ago (the unique open-group index), or a newer version is already there.
        """
        alert = change.alert
        row = _alert_row(alert)
        before = self.conn.total_changes
        sets = ", ".join(f"{c.strip()}=?" for c in _ALERT_COLUMNS.split(",")[1:])
        await self.conn.execute(
            f"UPDATE alerts SET {sets} WHERE id=? AND version<?", (*row[1:], alert.id, alert.version)
        )
        if self.conn.total_changes == before:
            await self.conn.execute(
                f"INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS}) VALUES ({','.join('?' * len(row))})", row
            )
        return self.conn.total_changes > before


def _statements(script: str) -> Iterable[str]:
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _anomaly_row(a: Anomaly) -> tuple[Any, ...]:
    return (
        a.id,
        a.signal_id,
        a.ts,
        a.series,
        a.service,
        a.value,
        a.expected,
        a.lower,
        a.upper,
        a.score,
        ",".join(a.detectors),
        a.explanation,
        orjson.dumps(dict(a.labels)).decode(),
    )


def _anomaly_from_row(row: Sequence[Any]) -> Anomaly:
    return Anomaly(
        id=row[0],
        signal_id=row[1],
        ts=row[2],
        series=row[3],
        service=row[4],
        value=row[5],
        expected=row[6],
        lower=row[7],
        upper=row[8],
        score=row[9],
        detectors=tuple(row[10].split(",")),
        explanation=row[11],
        labels=orjson.loads(row[12]),
    )


def _alert_row(a: Alert) -> tuple[Any, ...]:
    return (
        a.id,
        a.group_key,
        a.status,
        a.severity,
        a.title,
        a.series,
        a.service,
        a.source,
        a.started_at,
        a.updated_at,
        a.resolved_at,
        a.score,
        a.value,
        a.expected,
        a.lower,
        a.upper,
        a.explanation,
        orjson.dumps(dict(a.labels)).decode(),
        a.count,
        a.version,
        int(a.flapping),
        a.risk,
        orjson.dumps(dict(a.context)).decode(),
        a.acked_by,
        a.acked_at,
        a.snoozed_until,
        a.resolved_by,
        a.note,
    )


def _alert_from_row(row: Sequence[Any]) -> Alert:
    values = list(row)
    values[17] = orjson.loads(values[17])
    values[20] = bool(values[20])
    values[22] = orjson.loads(values[22])
    return Alert(*values)
