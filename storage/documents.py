"""The `DocumentStore` port on the record (either backend): what questions are answered from.

Documents are made from the record incrementally, each source read after its own
cursor: alerts (re-made when they change: acked, resolved with a note), anomalies,
changes, and the text of event, log and alert signals. A document's id is its id in
the vector index. Sources are followed by their `rowid` (SQLite's own; a BIGSERIAL column
of that name on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from engine.answers.retrieval import Doc
from storage.database import Database
from storage.record import Record

BATCH = 2000


class DocumentStore:
    def __init__(self, record: Record) -> None:
        self.record = record

    async def new_documents(self) -> list[Doc]:
        """Make documents from what was recorded since the last call; return them with their ids."""
        made: list[Doc] = []
        async with self.record.transaction() as tx:
            for source, query, to_doc in _SOURCES:
                position = await self._cursor(source, tx.db)
                # Row ids are integers (a PostgreSQL bigint takes no float); alerts go by time.
                after = position if source == "alerts" else int(position)
                rows = await tx.db.rows(query, (after, BATCH), f"reading {source} for the index")
                if not rows:
                    continue
                docs = [to_doc(r) for r in rows]
                for doc in docs:
                    [row] = await tx.db.rows(
                        "INSERT INTO documents (ref, kind, ts, service, series, text) "
                        "VALUES (?,?,?,?,?,?) ON CONFLICT (ref) "
                        "DO UPDATE SET ts=excluded.ts, text=excluded.text RETURNING id",
                        (doc.ref, doc.kind, doc.ts, doc.service, doc.series, doc.text),
                        "writing documents",
                    )  # RETURNING always gives the row
                    made.append(
                        Doc(int(row[0]), doc.ref, doc.kind, doc.ts, doc.service, doc.series, doc.text)
                    )
                await self._set_cursor(source, float(rows[-1][-1]), tx.db)
        return made

    async def all_documents(self, after_id: int, limit: int) -> list[Doc]:
        rows = await self.record._rows(
            "SELECT id, ref, kind, ts, service, series, text FROM documents WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
            "reading documents",
        )
        return [Doc(*r) for r in rows]

    async def candidates(self, since: float, until: float, services: Sequence[str], limit: int) -> list[int]:
        """Ids of documents in the window (and of these services), newest first."""
        where = "ts BETWEEN ? AND ?"
        params: list[object] = [since, until]
        if services:
            where = f"service IN ({','.join('?' * len(services))}) AND {where}"
            params = [*services, *params]
        # One row of comma-joined ids: a hundred thousand ids cost one fetch, not a hundred thousand rows.
        ids = self.record.db.joined_ids("id")
        rows = await self.record._rows(
            f"SELECT {ids} FROM (SELECT id FROM documents WHERE {where} ORDER BY ts DESC LIMIT ?) AS newest",
            (*params, limit),
            "filtering documents",
        )
        joined = rows[0][0] if rows else None
        return np.fromstring(joined, dtype="int64", sep=",").tolist() if joined else []

    async def documents(self, ids: Sequence[int]) -> list[Doc]:
        rows = await self.record._select_in(
            "SELECT id, ref, kind, ts, service, series, text FROM documents WHERE id IN ({marks})",
            [int(i) for i in ids],
            "reading documents",
        )
        return [Doc(*r) for r in rows]

    async def prune(self, before: float) -> list[int]:
        """Forget documents older than `before`; return their ids (to drop from the index)."""
        async with self.record.transaction() as tx:
            rows = await tx.db.rows("SELECT id FROM documents WHERE ts < ?", (before,), "pruning documents")
            await tx.db.execute("DELETE FROM documents WHERE ts < ?", (before,), "pruning documents")
        return [int(r[0]) for r in rows]

    async def count(self) -> int:
        rows = await self.record._rows("SELECT count(*) FROM documents", (), "counting documents")
        return int(rows[0][0])

    async def names(self) -> tuple[list[str], list[str]]:
        """Services and series that questions may name: those recorded (the series catalogue, as
        fresh as the last worker commit) and those with documents (alerts, changes, events)."""
        services = await self.record._rows("SELECT DISTINCT service FROM documents", (), "listing services")
        series = await self.record._rows("SELECT DISTINCT series FROM documents", (), "listing series")
        known_services, known_series = await self.record.catalogue_names()
        return (
            sorted({*known_services, *(r[0] for r in services if r[0])}),
            sorted({*known_series, *(r[0] for r in series if r[0])}),
        )

    async def _cursor(self, source: str, db: Database) -> float:
        rows = await db.rows("SELECT position FROM index_cursors WHERE source = ?", (source,), "cursor")
        return float(rows[0][0]) if rows else -1.0

    async def _set_cursor(self, source: str, position: float, db: Database) -> None:
        await db.execute(
            "INSERT INTO index_cursors (source, position) VALUES (?, ?) "
            "ON CONFLICT (source) DO UPDATE SET position = excluded.position",
            (source, position),
            "saving an index cursor",
        )


def _alert_doc(r: Sequence[Any]) -> Doc:
    alert_id, status, severity, title, series, service, started, explanation, acked, resolved_by, note = r[
        :11
    ]
    parts = [f"alert {status} {severity}: {title}.", explanation or ""]
    if acked:
        parts.append(f"acknowledged by {acked}.")
    if resolved_by:
        parts.append(f"resolved by {resolved_by}" + (f": {note}" if note else "") + ".")
    return Doc(
        0, f"alert:{alert_id}", "alert", float(started), service, series, " ".join(p for p in parts if p)
    )


def _anomaly_doc(r: Sequence[Any]) -> Doc:
    anomaly_id, ts, series, service, explanation = r[:5]
    return Doc(
        0,
        f"anomaly:{anomaly_id}",
        "anomaly",
        float(ts),
        service,
        series,
        f"anomaly on {series}: {explanation}",
    )


def _change_doc(r: Sequence[Any]) -> Doc:
    change_id, ts, service, change_type, text = r[:5]
    return Doc(
        0, f"change:{change_id}", "change", float(ts), service, "", f"{change_type} on {service}: {text}"
    )


def _signal_doc(r: Sequence[Any]) -> Doc:
    signal_id, ts, kind, series, text, labels = r[:6]
    service = str(orjson.loads(labels).get("service") or series.split(".", 1)[0])
    return Doc(0, f"signal:{signal_id}", kind, float(ts), service, series, f"{kind} {series}: {text}")


_SOURCES = [
    (
        "alerts",
        "SELECT id, status, severity, title, series, service, started_at, explanation, acked_by, "
        "resolved_by, note, updated_at FROM alerts WHERE updated_at > ? "
        "ORDER BY updated_at LIMIT ?",
        _alert_doc,
    ),
    (
        "anomalies",
        "SELECT id, ts, series, service, explanation, rowid FROM anomalies WHERE rowid > ? "
        "ORDER BY rowid LIMIT ?",
        _anomaly_doc,
    ),
    (
        "changes",
        "SELECT id, ts, service, change_type, text, rowid FROM changes WHERE rowid > ? "
        "ORDER BY rowid LIMIT ?",
        _change_doc,
    ),
    (
        "signals",
        "SELECT id, ts, kind, series, text, labels, rowid FROM signals WHERE rowid > ? "
        "AND text IS NOT NULL AND text != '' AND kind IN ('event', 'log', 'alert') ORDER BY rowid LIMIT ?",
        _signal_doc,
    ),
]
