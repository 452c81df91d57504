"""The record in one SQLite file (WAL): the embedded default, nothing to set up."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import aiosqlite

from engine.errors import RecordUnavailable
from storage.record import Record
from storage.sqlite.database import SqliteDatabase, sqlite_guarded
from storage.sqlite.schema import MIGRATIONS, statements

log = logging.getLogger(__name__)


class SqliteRecord(Record):
    """The record at `path`, opened (created if needed) and migrated by `open`."""

    db: SqliteDatabase

    def __init__(self, db: SqliteDatabase, path: Path) -> None:
        super().__init__(db, str(path))
        self.path = path

    @property
    def conn(self) -> aiosqlite.Connection:
        """The connection itself (benchmarks bulk-load through it)."""
        return self.db.conn

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> SqliteRecord:
        """Open (creating if needed) and migrate the record at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise RecordUnavailable(f"cannot open SQLite file {path}: {exc}") from exc
        record = cls(SqliteDatabase(conn), path)
        try:
            await sqlite_guarded(lambda: record._configure(busy_timeout_ms), f"opening {path}")
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
                for statement in statements(script):
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
