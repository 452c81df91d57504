"""The record on SQLite: the embedded default (one file, nothing to configure)."""

from storage.record import Record, Transaction
from storage.sqlite.record import SqliteRecord
from storage.sqlite.schema import MIGRATIONS

SqliteTransaction = Transaction

__all__ = ["MIGRATIONS", "Record", "SqliteRecord", "SqliteTransaction", "Transaction"]
