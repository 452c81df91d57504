"""One way to run SQL on the record's two backends: SQLite (aiosqlite) and PostgreSQL (asyncpg).

The record's code writes SQL once, with `?` placeholders and the subset both speak
(`INSERT … ON CONFLICT DO NOTHING … RETURNING`, partial unique indexes, upserts with a
conflict target); the few words that differ come from the `Database` (`greatest`,
`joined_ids`). PostgreSQL gets `$1, $2, …` in place of `?`.

Failures of the database itself (it is down, restarting, out of connections, a
deadlock) become `RecordUnavailable`, which callers retry; a bug in a statement is not
hidden that way on PostgreSQL (it raises as itself).

Why asyncpg rather than psycopg 3: SigOps is asyncio throughout, and asyncpg is an asyncio
driver with a built-in pool, prepared-statement caching and binary transfer; the record's
batches (500-row multi-value inserts, executemany) are where that matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgres"]


class Database(Protocol):
    """SQL on one backend; `transaction()` gives a `Database` bound to that transaction."""

    dialect: Dialect

    async def rows(self, sql: str, params: Sequence[Any] = (), what: str = "reading") -> list[Sequence[Any]]:
        """All rows of one query."""
        ...

    async def execute(self, sql: str, params: Sequence[Any] = (), what: str = "writing") -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], what: str = "writing") -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Database]:
        """A write transaction, committed when the block exits normally, rolled back otherwise."""
        ...

    def greatest(self, a: str, b: str) -> str:
        """SQL for the larger of two values (SQLite's two-argument max, PostgreSQL's GREATEST)."""
        ...

    def least(self, a: str, b: str) -> str: ...

    def joined_ids(self, column: str) -> str:
        """SQL aggregating integer ids into one comma-separated text."""
        ...

    async def close(self) -> None: ...
