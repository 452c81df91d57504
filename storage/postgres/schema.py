"""The PostgreSQL schema: the same versions as SQLite's (storage.sqlite.schema), table for table.

Differences, all in types and ids: DOUBLE PRECISION for REAL, BIGSERIAL for SQLite's
automatic ids, and a `rowid` BIGSERIAL column on the tables that SQLite's own rowid
follows (signals, anomalies, changes, audit), so the record's queries read the same on
both. The version in force is kept in `sigops_schema`.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: signals, anomalies, alerts
    """
    CREATE TABLE signals (
        id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        series TEXT NOT NULL,
        value DOUBLE PRECISION,
        labels TEXT NOT NULL,
        text TEXT,
        severity TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL,
        rowid BIGSERIAL
    );
    CREATE UNIQUE INDEX signals_series_ts_id ON signals (series, ts, id);
    CREATE INDEX signals_ts ON signals (ts);
    CREATE INDEX signals_rowid ON signals (rowid);
    CREATE TABLE anomalies (
        id TEXT PRIMARY KEY,
        signal_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        series TEXT NOT NULL,
        service TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        expected DOUBLE PRECISION NOT NULL,
        lower DOUBLE PRECISION NOT NULL,
        upper DOUBLE PRECISION NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        detectors TEXT NOT NULL,
        explanation TEXT NOT NULL,
        labels TEXT NOT NULL,
        rowid BIGSERIAL
    );
    CREATE INDEX anomalies_ts ON anomalies (ts);
    CREATE INDEX anomalies_series_ts ON anomalies (series, ts);
    CREATE INDEX anomalies_rowid ON anomalies (rowid);
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        series TEXT NOT NULL,
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        resolved_at DOUBLE PRECISION,
        score DOUBLE PRECISION NOT NULL,
        value DOUBLE PRECISION,
        expected DOUBLE PRECISION,
        lower DOUBLE PRECISION,
        upper DOUBLE PRECISION,
        explanation TEXT NOT NULL,
        labels TEXT NOT NULL,
        count INTEGER NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX alerts_open_group ON alerts (group_key) WHERE status != 'resolved';
    CREATE INDEX alerts_updated ON alerts (updated_at);
    """,
    # 2: flapping alerts
    """
    ALTER TABLE alerts ADD COLUMN flapping INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: risk and related context on alerts; changes
    """
    ALTER TABLE alerts ADD COLUMN risk DOUBLE PRECISION NOT NULL DEFAULT 0;
    ALTER TABLE alerts ADD COLUMN context TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE changes (
        id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        service TEXT NOT NULL,
        change_type TEXT NOT NULL,
        text TEXT NOT NULL,
        rowid BIGSERIAL
    );
    CREATE INDEX changes_service_ts ON changes (service, ts);
    CREATE INDEX changes_rowid ON changes (rowid);
    """,
    # 4: what people did to alerts; silences; the notification pipeline's log and outbox
    """
    ALTER TABLE alerts ADD COLUMN acked_by TEXT;
    ALTER TABLE alerts ADD COLUMN acked_at DOUBLE PRECISION;
    ALTER TABLE alerts ADD COLUMN snoozed_until DOUBLE PRECISION;
    ALTER TABLE alerts ADD COLUMN resolved_by TEXT;
    ALTER TABLE alerts ADD COLUMN note TEXT NOT NULL DEFAULT '';
    CREATE INDEX alerts_status ON alerts (status, updated_at);
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at DOUBLE PRECISION NOT NULL,
        ends_at DOUBLE PRECISION NOT NULL,
        author TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expired_at DOUBLE PRECISION
    );
    CREATE INDEX silences_ends ON silences (ends_at);
    CREATE TABLE notify_groups (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        receiver TEXT NOT NULL,
        labels TEXT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        last_sent DOUBLE PRECISION,
        members TEXT NOT NULL,
        version INTEGER NOT NULL,
        closed INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX notify_groups_open ON notify_groups (key) WHERE closed = 0;
    CREATE TABLE notify_log (
        ts DOUBLE PRECISION NOT NULL,
        group_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        alerts TEXT NOT NULL
    );
    CREATE INDEX notify_log_ts ON notify_log (ts);
    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        group_id TEXT NOT NULL,
        platform TEXT NOT NULL,
        chat TEXT NOT NULL,
        version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        message_id TEXT,
        error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION,
        UNIQUE (group_id, platform, chat, version)
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_at);
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
        ts DOUBLE PRECISION NOT NULL,
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        rowid BIGSERIAL
    );
    CREATE INDEX audit_ts ON audit (ts);
    """,
    # 6: documents for question answering (their ids are the vector index's)
    """
    CREATE TABLE documents (
        id BIGSERIAL PRIMARY KEY,
        ref TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        service TEXT NOT NULL,
        series TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX documents_ts ON documents (ts);
    CREATE INDEX documents_service_ts ON documents (service, ts);
    CREATE TABLE index_cursors (
        source TEXT PRIMARY KEY,
        position DOUBLE PRECISION NOT NULL
    );
    """,
    # 7: whether the dispatcher has taken up an alert
    """
    ALTER TABLE alerts ADD COLUMN told INTEGER NOT NULL DEFAULT 0;
    UPDATE alerts SET told = 1;
    CREATE INDEX alerts_untold ON alerts (told) WHERE told = 0;
    """,
    # 8: the series catalogue
    """
    CREATE TABLE series_catalogue (
        name TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_ts DOUBLE PRECISION NOT NULL,
        last_ts DOUBLE PRECISION NOT NULL,
        points INTEGER NOT NULL
    );
    CREATE INDEX series_catalogue_service ON series_catalogue (service);
    INSERT INTO series_catalogue (name, service, kind, first_ts, last_ts, points)
        SELECT series,
            coalesce(nullif(max(labels)::jsonb ->> 'service', ''), split_part(series, '.', 1)),
            max(kind), min(ts), max(ts), count(*)
        FROM signals GROUP BY series;
    """,
    # 9: heartbeats (Alertmanager's Watchdog) for the dead-man's switch
    """
    CREATE TABLE heartbeats (
        name TEXT PRIMARY KEY,
        last_ts DOUBLE PRECISION NOT NULL
    );
    """,
    # 10: the Alertmanager silences made with a SigOps silence
    """
    ALTER TABLE silences ADD COLUMN upstream_ids TEXT NOT NULL DEFAULT '[]';
    """,
]
