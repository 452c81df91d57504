"""The durable record, on either backend: signals, anomalies, alerts, the series catalogue.

`Record` is the `SignalRecord` port and `Transaction` the `RecordTransaction` port; both
run their SQL through a `Database` (storage.database), so the same statements serve the
SQLite file of the embedded default and a shared PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson

from engine.alerting.alerts import SIMILAR_TITLES, Alert, AlertChange, title_similarity
from engine.alerting.risk import ChangeRef
from engine.detection.detect import Anomaly
from engine.errors import RecordUnavailable
from engine.signal import Signal
from storage.database import Database

log = logging.getLogger(__name__)


_SEVERITY_ORDER = "CASE severity WHEN 'critical' THEN 3 WHEN 'error' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END"
_ALERT_COLUMNS = (
    "id, group_key, status, severity, title, series, service, source, started_at, updated_at, "
    "resolved_at, score, value, expected, lower, upper, explanation, labels, count, version, flapping, "
    "risk, context, acked_by, acked_at, snoozed_until, resolved_by, note"
)
_ALERT_COLUMN_NAMES = [c.strip() for c in _ALERT_COLUMNS.split(",")]
_TITLE_AT, _NOTE_AT = _ALERT_COLUMN_NAMES.index("title"), _ALERT_COLUMN_NAMES.index("note")
SIMILAR_SCAN = 500  # past resolved alerts compared by title when nothing from the same series ended
_ANOMALY_COLUMNS = (
    "id, signal_id, ts, series, service, value, expected, lower, upper, score, detectors, explanation, labels"
)


class Record:
    """The `SignalRecord` port on a `Database`: SQLite (the embedded default) or PostgreSQL.

    The backends differ only in how they are opened and migrated (`storage.sqlite`,
    `storage.postgres`); every query here runs on both.
    """

    dialect: str

    def __init__(self, db: Database, where: str) -> None:
        self.db = db
        self.where = where  # the file or the server, for messages
        self.dialect = db.dialect

    async def close(self) -> None:
        await self.db.close()

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
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction, committed at the end of the block (rolled back on an error)."""
        async with self.db.transaction() as db:
            yield Transaction(self, db)

    async def open_alerts(self, keys: Sequence[str], db: Database | None = None) -> dict[str, Alert]:
        rows = await self._select_in(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' AND group_key IN ({{marks}})",
            list(keys),
            "reading open alerts",
            db=db,
        )
        return {a.group_key: a for a in map(_alert_from_row, rows)}

    async def _select_in(
        self,
        sql: str,
        values: Sequence[Any],
        what: str,
        after: Sequence[Any] = (),
        db: Database | None = None,
    ) -> list[Any]:
        """Run `sql` with `{marks}` bound to `values` (then `after` to later `?`), in chunks."""
        rows: list[Any] = []
        for chunk in _chunks(values, 900):
            query = sql.format(marks=",".join("?" * len(chunk)))
            rows += await self._rows(query, [*chunk, *after], what, db)
        return rows

    async def _execute_in(self, sql: str, values: Sequence[Any], db: Database, what: str = "writing") -> None:
        """Run a write with `{marks}` bound to `values`, in chunks (inside the caller's transaction)."""
        for chunk in _chunks(values, 900):
            await db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk, what)

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

    async def _rows(
        self, sql: str, params: Sequence[Any], what: str, db: Database | None = None
    ) -> list[Any]:
        """All rows of one query (on `db`: inside that transaction), failures as RecordUnavailable."""
        return list(await (db or self.db).rows(sql, params, what))

    async def series_points(
        self, series: str, since: float, limit: int = 20_000
    ) -> list[tuple[float, float]]:
        """(ts, value) of one series since `since`, oldest first (the newest `limit`)."""
        rows = await self._rows(
            "SELECT ts, value FROM (SELECT ts, value FROM signals WHERE series = ? AND ts >= ? "
            "AND value IS NOT NULL ORDER BY ts DESC LIMIT ?) AS recent ORDER BY ts",
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
                async with self.transaction() as tx:
                    deleted = await tx.db.execute(
                        f"DELETE FROM {table} WHERE rowid IN "
                        f"(SELECT rowid FROM {table} WHERE ts < ? LIMIT ?)",
                        (before, chunk),
                        f"pruning old {table}",
                    )
                total += deleted
                if deleted < chunk:
                    break
            removed[table] = total
        async with self.transaction() as tx:
            await tx.db.execute(
                "DELETE FROM series_catalogue WHERE last_ts < ?", (before,), "pruning the series catalogue"
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


class Transaction:
    """The `RecordTransaction` port inside one write transaction (`db` is bound to it)."""

    # Rows per multi-row INSERT: 11 columns stay well under either backend's parameter limit.
    ROWS_PER_INSERT = 500

    def __init__(self, record: Record, db: Database) -> None:
        self.record = record
        self.db = db

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
            # DO NOTHING + RETURNING: the ids that are new, in the same statement as the insert.
            rows = await self.db.rows(
                "INSERT INTO signals (id, ts, source, kind, series, value, labels, text, "
                f"severity, received_at, recorded_at) VALUES {values} ON CONFLICT DO NOTHING RETURNING id",
                params,
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
            await self.db.executemany(
                "INSERT INTO changes (id, ts, service, change_type, text) VALUES (?,?,?,?,?) "
                "ON CONFLICT DO NOTHING",
                changes,
                "recording changes",
            )
        return new

    async def recorded_extent(self, series: Sequence[str]) -> dict[str, tuple[float, int]]:
        rows = await self.record._select_in(
            "SELECT name, last_ts, points FROM series_catalogue WHERE name IN ({marks})",
            list(series),
            "reading series' extents",
            db=self.db,
        )
        return {name: (float(ts), int(points)) for name, ts, points in rows}

    async def points_after(self, series: str, after: float, limit: int) -> list[tuple[Signal, float]]:
        rows = await self.db.rows(
            "SELECT id, ts, source, value, labels, text, severity, received_at FROM signals "
            "WHERE series = ? AND ts > ? AND kind = 'metric' AND value IS NOT NULL ORDER BY rowid LIMIT ?",
            (series, after, limit),
            "reading a series' latest points",
        )
        return _points(series, rows)

    async def latest_points(self, series: str, limit: int) -> list[tuple[Signal, float]]:
        # By time, down the (series, ts, id) index: only `limit` rows are read, however long
        # the series' history; then back in the order they were recorded.
        rows = await self.db.rows(
            "SELECT id, ts, source, value, labels, text, severity, received_at, rowid FROM signals "
            "WHERE series = ? AND kind = 'metric' AND value IS NOT NULL ORDER BY ts DESC LIMIT ?",
            (series, limit),
            "reading a series' latest points",
        )
        return _points(series, [row[:8] for row in sorted(rows, key=lambda r: r[8])])

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
            db = self.db
            first = db.least("series_catalogue.first_ts", "excluded.first_ts")
            last = db.greatest("series_catalogue.last_ts", "excluded.last_ts")
            await db.executemany(
                "INSERT INTO series_catalogue (name, service, kind, first_ts, last_ts, points) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET service = excluded.service, "
                f"first_ts = {first}, last_ts = {last}, points = series_catalogue.points + excluded.points",
                list(seen.values()),
                "cataloguing series",
            )

    async def recent_changes(self, services: Sequence[str], since: float) -> list[ChangeRef]:
        rows = await self.record._select_in(
            "SELECT id, ts, service, change_type, text FROM changes WHERE service IN ({marks}) "
            "AND ts >= ? ORDER BY ts",
            list(services),
            "reading recent changes",
            after=(since,),
            db=self.db,
        )
        return [ChangeRef(*row) for row in rows]

    async def open_alerts_of_services(self, services: Sequence[str]) -> list[Alert]:
        rows = await self.record._select_in(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' AND service IN ({{marks}})",
            list(services),
            "reading open alerts of services",
            db=self.db,
        )
        return [_alert_from_row(r) for r in rows]

    async def open_alerts(self, keys: Sequence[str]) -> dict[str, Alert]:
        return await self.record.open_alerts(keys, self.db)

    async def add_anomalies(self, anomalies: Sequence[Anomaly]) -> None:
        if anomalies:
            await self.db.executemany(
                f"INSERT INTO anomalies ({_ANOMALY_COLUMNS}) VALUES ({','.join('?' * 13)}) "
                "ON CONFLICT DO NOTHING",
                [_anomaly_row(a) for a in anomalies],
                "recording anomalies",
            )

    async def last_time(self, alert: Alert) -> Alert | None:
        rows = await self.db.rows(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status = 'resolved' AND id != ? AND resolved_at <= ? "
            "AND (group_key = ? OR (service = ? AND service != '' AND title = ?)) "
            "ORDER BY CASE WHEN group_key = ? THEN 1 ELSE 0 END DESC, "
            "CASE WHEN note != '' THEN 1 ELSE 0 END DESC, resolved_at DESC LIMIT 1",
            (alert.id, alert.started_at, alert.group_key, alert.service, alert.title, alert.group_key),
            "finding what worked last time",
        )
        if rows:
            return _alert_from_row(rows[0])
        # Nothing from the same series or service: the past alert most alike by its title
        # ("checkout.latency_p99 unusually high" for "payments.latency_p99 unusually high").
        recent = await self.db.rows(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status = 'resolved' AND id != ? AND resolved_at <= ? "
            "ORDER BY resolved_at DESC LIMIT ?",
            (alert.id, alert.started_at, SIMILAR_SCAN),
            "finding what worked for something similar",
        )
        scored = [(title_similarity(alert.title, str(row[_TITLE_AT])), i) for i, row in enumerate(recent)]
        alike = [(score, i) for score, i in scored if score >= SIMILAR_TITLES]
        if not alike:
            return None
        # Most alike first; then one with a resolution note; then the most recent.
        _, best = max(alike, key=lambda si: (si[0], bool(recent[si[1]][_NOTE_AT]), -si[1]))
        return _alert_from_row(recent[best])

    async def beat(self, name: str, ts: float) -> None:
        latest = self.db.greatest("heartbeats.last_ts", "excluded.last_ts")
        await self.db.execute(
            "INSERT INTO heartbeats (name, last_ts) VALUES (?, ?) "
            f"ON CONFLICT (name) DO UPDATE SET last_ts = {latest}",
            (name, ts),
            "noting a heartbeat",
        )

    async def write_alerts(self, changes: Sequence[AlertChange]) -> frozenset[str]:
        applied = set()
        for change in changes:
            if await self._write_alert(change):
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
        sets = ", ".join(f"{c}=?" for c in _ALERT_COLUMN_NAMES[1:])
        updated = await self.db.execute(
            f"UPDATE alerts SET {sets} WHERE id=? AND version<?",
            (*row[1:], alert.id, alert.version),
            "recording alerts",
        )
        if updated:
            return True
        inserted = await self.db.execute(
            f"INSERT INTO alerts ({_ALERT_COLUMNS}) VALUES ({','.join('?' * len(row))}) "
            "ON CONFLICT DO NOTHING",
            row,
            "recording alerts",
        )
        return inserted > 0


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


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


def _points(series: str, rows: Iterable[Sequence[Any]]) -> list[tuple[Signal, float]]:
    """(signal, received_at) from rows of id, ts, source, value, labels, text, severity, received_at."""
    return [
        (Signal(i, ts, source, "metric", series, value, orjson.loads(labels), text, severity), received)
        for i, ts, source, value, labels, text, severity, received in rows
    ]
