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


class _Statements:
    """Statements on a pool (each on any free connection) or on one connection (a transaction):
    asyncpg gives both the same `fetch`, `execute` and `executemany`."""

    dialect: Dialect = "postgres"

    def __init__(self, target: asyncpg.Pool | asyncpg.Connection) -> None:
        self.target = target

    async def rows(self, sql: str, params: Sequence[Any] = (), what: str = "reading") -> list[Sequence[Any]]:
        return list(await pg_guarded(lambda: self.target.fetch(_numbered(sql), *params), what))

    async def execute(self, sql: str, params: Sequence[Any] = (), what: str = "writing") -> int:
        return _changed(await pg_guarded(lambda: self.target.execute(_numbered(sql), *params), what))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]], what: str = "writing") -> None:
        if rows:
            await pg_guarded(lambda: self.target.executemany(_numbered(sql), rows), what)

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})"

    def joined_ids(self, column: str) -> str:
        return f"string_agg({column}::text, ',')"


class _InTransaction(_Statements):
    """The statements of one transaction, on the connection it holds."""

    target: asyncpg.Connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self.target.transaction():  # a savepoint inside the transaction
            yield self

    async def close(self) -> None:
        return None


class PostgresDatabase(_Statements):
    """A pool of connections: reads take any, a transaction keeps one until it ends."""

    target: asyncpg.Pool

    def __init__(self, pool: asyncpg.Pool, acquire_timeout_s: float = 10.0) -> None:
        super().__init__(pool)
        self.acquire_timeout_s = acquire_timeout_s

    @property
    def pool(self) -> asyncpg.Pool:
        return self.target

    @classmethod
    async def connect(cls, url: str, *, timeout_s: float = 10.0, max_size: int = 10) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=max_size, timeout=timeout_s, command_timeout=timeout_s
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise RecordUnavailable(f"cannot connect to PostgreSQL at {hide_password(url)}: {exc}") from exc
        return cls(pool, timeout_s)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        conn = await pg_guarded(
            lambda: self.pool.acquire(timeout=self.acquire_timeout_s), "starting a transaction"
        )
        try:
            transaction = conn.transaction()
            await pg_guarded(transaction.start, "starting a transaction")
            try:
                yield _InTransaction(conn)
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
