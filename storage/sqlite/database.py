"""The `Database` on one aiosqlite connection."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiosqlite

from engine.errors import RecordUnavailable
from storage.database import Database, Dialect

T = TypeVar("T")


async def sqlite_guarded(call: Callable[[], Awaitable[T]], what: str) -> T:
    try:
        return await call()
    except (sqlite3.OperationalError, sqlite3.DatabaseError, ValueError) as exc:
        # ValueError: aiosqlite's "no active connection" after close.
        raise RecordUnavailable(f"SQLite failed while {what}: {exc}") from exc


class SqliteDatabase:
    """One aiosqlite connection: one transaction at a time (BEGIN IMMEDIATE), WAL for readers."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self._write_lock = asyncio.Lock()

    async def rows(self, sql: str, params: Sequence[Any] = (), what: str = "reading") -> list[Sequence[Any]]:
        return list(await sqlite_guarded(lambda: self.conn.execute_fetchall(sql, params), what))

    async def execute(self, sql: str, params: Sequence[Any] = (), what: str = "writing") -> int:
        cursor = await sqlite_guarded(lambda: self.conn.execute(sql, params), what)
        return int(cursor.rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], what: str = "writing") -> None:
        await sqlite_guarded(lambda: self.conn.executemany(sql, rows), what)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        """One connection runs one transaction at a time: concurrent callers in this process
        wait their turn (other processes wait on SQLite's own lock, `busy_timeout`)."""
        async with self._write_lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
            except (sqlite3.Error, ValueError) as exc:
                raise RecordUnavailable(f"SQLite failed to start a transaction: {exc}") from exc
            try:
                yield self
                await sqlite_guarded(lambda: self.conn.execute("COMMIT"), "committing")
            except BaseException:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self.conn.execute("ROLLBACK")
                raise

    def greatest(self, a: str, b: str) -> str:
        return f"max({a}, {b})"

    def least(self, a: str, b: str) -> str:
        return f"min({a}, {b})"

    def joined_ids(self, column: str) -> str:
        return f"group_concat({column})"

    async def close(self) -> None:
        await self.conn.close()
