"""The SQLite schema: `MIGRATIONS[i]` takes version i to i + 1 (`PRAGMA user_version`).

The PostgreSQL schema (storage.postgres.schema) has the same versions, table for table.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def statements(script: str) -> Iterable[str]:
    """The statements of a migration script (comments dropped)."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
