"""Every integration test runs twice: on the SQLite record and on a PostgreSQL record.

One parametrised fixture does it. On `postgres` it makes a fresh database per test on the
machine's PostgreSQL (SIGOPS_TEST_POSTGRES_URL, trust auth), drops it afterwards, points
SIGOPS_DATABASE_URL at it (for the runtimes and the `sigops` processes a test starts),
and opens a record there wherever a test opens one by path (`SqliteRecord.open`; the same
path twice is the same database). A test that needs the SQLite file itself is marked
`sqlite_only`; one that never touches the record, `record_free` (it runs once).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from storage.postgres import PostgresRecord
from storage.record import Record
from storage.sqlite import SqliteRecord

ADMIN_URL = os.environ.get("SIGOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs a test's markers rule out (sqlite_only, record_free, postgres_only) are not collected."""
    once = [
        item
        for item in items
        if ("[postgres" in item.nodeid
            and (item.get_closest_marker("sqlite_only") or item.get_closest_marker("record_free")))
        or ("[sqlite" in item.nodeid and item.get_closest_marker("postgres_only"))
    ]  # fmt: skip
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if item not in once]


@pytest.fixture(params=["sqlite", "postgres"], autouse=True)
async def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    try:
        await _admin("SELECT 1")
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is needed at {ADMIN_URL} for the postgres runs (.ci/run starts it): {exc}")
    made: dict[str, str] = {}
    opened: list[Record] = []

    async def database_for(key: str) -> str:
        if key not in made:
            name = f"sigops_test_{uuid.uuid4().hex[:12]}"
            await _admin(f'CREATE DATABASE "{name}"')
            made[key] = name
        return _url(made[key])

    async def open_on_postgres(cls: type[SqliteRecord], path: Path, **_: Any) -> Record:
        # SIGOPS_DATA_DIR's sigops.db is the configured database (the one `sigops` processes the
        # test starts use); any other file is a database of its own.
        key = "environment" if Path(path).name == "sigops.db" else str(path)
        record = await PostgresRecord.open(await database_for(key), pool_size=4)
        opened.append(record)
        return record

    monkeypatch.setenv("SIGOPS_DATABASE_URL", await database_for("environment"))
    monkeypatch.setattr(SqliteRecord, "open", classmethod(open_on_postgres))
    try:
        yield "postgres"
    finally:
        for record in opened:
            with contextlib.suppress(Exception):  # a test may have closed it, or broken it on purpose
                await record.close()
        for name in made.values():
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(sql: str) -> None:
    """One statement on the maintenance database, on a connection of the running loop (Hypothesis
    runs each example in a loop of its own)."""
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
