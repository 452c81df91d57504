"""The record on PostgreSQL (SIGOPS_DATABASE_URL): shared by several SigOps nodes."""

from storage.postgres.record import PostgresRecord

__all__ = ["PostgresRecord"]
