"""The record on SQLite: the embedded default (one file, nothing to configure)."""

from storage.sqlite.record import SqliteRecord
from storage.sqlite.schema import MIGRATIONS

__all__ = ["MIGRATIONS", "SqliteRecord"]
