"""The record on PostgreSQL: one database shared by several SigOps nodes."""

from __future__ import annotations

import logging

from storage.postgres.database import PostgresDatabase, hide_password, pg_guarded
from storage.postgres.schema import MIGRATIONS
from storage.record import Record
from storage.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from storage.sqlite.schema import statements

log = logging.getLogger(__name__)

# Several nodes starting at once migrate one at a time (a transaction-scoped advisory lock).
_MIGRATION_LOCK = 0x5160_0C5
assert len(MIGRATIONS) == len(SQLITE_MIGRATIONS), "the two schemas must have the same versions"


class PostgresRecord(Record):
    db: PostgresDatabase

    @classmethod
    async def open(cls, url: str, *, timeout_s: float = 10.0, pool_size: int = 10) -> PostgresRecord:
        """Connect (a pool) and migrate the record in the database at `url`."""
        db = await PostgresDatabase.connect(url, timeout_s=timeout_s, max_size=pool_size)
        record = cls(db, hide_password(url))
        try:
            await record.migrate()
        except BaseException:
            await db.close()
            raise
        return record

    async def migrate(self) -> int:
        """Apply pending migrations (one transaction, a savepoint per version); return the version
        in force. A server that does not answer is RecordUnavailable, as for every other call."""
        return await pg_guarded(self._migrate, "migrating the schema")

    async def _migrate(self) -> int:
        async with self.db.pool.acquire(timeout=self.db.acquire_timeout_s) as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute("CREATE TABLE IF NOT EXISTS sigops_schema (version INTEGER NOT NULL)")
                version = await conn.fetchval("SELECT max(version) FROM sigops_schema") or 0
                for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    async with conn.transaction():  # a savepoint: one version at a time
                        for statement in statements(script):
                            await conn.execute(statement)
                        await conn.execute("INSERT INTO sigops_schema (version) VALUES ($1)", target)
                    log.debug("PostgreSQL schema migrated to version %d", target)
        if version < len(MIGRATIONS):
            log.info("PostgreSQL schema at version %d (was %d)", len(MIGRATIONS), version)
        return len(MIGRATIONS)
