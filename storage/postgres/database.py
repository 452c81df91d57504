"""The `Database` on an asyncpg pool."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from engine.errors import RecordUnavailable
from storage.database import Database, Dialect

T = TypeVar("T")


# SQLSTATE classes that mean "the database cannot serve now", not "this statement is wrong":
# connection exceptions, insufficient resources, operator intervention (shutdown, starting up),
# transaction rollback (serialization failure, deadlock).
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "40"})


async def pg_guarded(call: Callable[[], Awaitable[T]], what: str) -> T:
    try:
        return await call()
    except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
        raise RecordUnavailable(f"PostgreSQL unavailable while {what}: {exc or type(exc).__name__}") from exc
    except asyncpg.PostgresError as exc:
        if str(getattr(exc, "sqlstate", "") or "")[:2] in _UNAVAILABLE_CLASSES:
            raise RecordUnavailable(f"PostgreSQL unavailable while {what}: {exc}") from exc
        raise


@lru_cache(maxsize=2048)
def _numbered(sql: str) -> str:
    """`?` placeholders as `$1, $2, …` (the record's SQL has no `?` inside literals)."""
    counter = iter(range(1, 100_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def _changed(status: str) -> int:
    """Rows changed, from asyncpg's command status ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PgConnection:
    """Statements on one connection (inside a transaction)."""

    dialect: Dialect = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def rows(self, sql: str, params: Sequence[Any] = (), what: str = "reading") -> list[Sequence[Any]]:
        return list(await pg_guarded(lambda: self.conn.fetch(_numbered(sql), *params), what))

    async def execute(self, sql: str, params: Sequence[Any] = (), what: str = "writing") -> int:
        return _changed(await pg_guarded(lambda: self.conn.execute(_numbered(sql), *params), what))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], what: str = "writing") -> None:
        if rows:
            await pg_guarded(lambda: self.conn.executemany(_numbered(sql), rows), what)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self.conn.transaction():  # a savepoint when already inside one
            yield self

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})"

    def joined_ids(self, column: str) -> str:
        return f"string_agg({column}::text, ',')"

    async def close(self) -> None:
        return None


class PostgresDatabase(_PgConnection):
    """A pool of connections: reads take any, a transaction keeps one until it ends."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout_s: float = 10.0) -> None:
        self.pool = pool
        self.acquire_timeout_s = acquire_timeout_s

    @classmethod
    async def connect(cls, url: str, *, timeout_s: float = 10.0, max_size: int = 10) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=max_size, timeout=timeout_s, command_timeout=timeout_s
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise RecordUnavailable(f"cannot connect to PostgreSQL at {hide_password(url)}: {exc}") from exc
        return cls(pool, timeout_s)

    async def rows(self, sql: str, params: Sequence[Any] = (), what: str = "reading") -> list[Sequence[Any]]:
        return list(await pg_guarded(lambda: self.pool.fetch(_numbered(sql), *params), what))

    async def execute(self, sql: str, params: Sequence[Any] = (), what: str = "writing") -> int:
        return _changed(await pg_guarded(lambda: self.pool.execute(_numbered(sql), *params), what))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], what: str = "writing") -> None:
        if rows:
            await pg_guarded(lambda: self.pool.executemany(_numbered(sql), rows), what)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        conn = await pg_guarded(
            lambda: self.pool.acquire(timeout=self.acquire_timeout_s), "starting a transaction"
        )
        try:
            transaction = conn.transaction()
            await pg_guarded(transaction.start, "starting a transaction")
            try:
                yield _PgConnection(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                raise
            await pg_guarded(transaction.commit, "committing")
        finally:
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def close(self) -> None:
        await self.pool.close()


def hide_password(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
