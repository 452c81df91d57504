"""SigOps' own exceptions.

    SigOpsError
    ├── InvalidSignal          a record failed validation (names the field)
    ├── PayloadError           a request body could not be read as what it claims to be
    ├── QueueUnavailable       the signal stream (Redis) cannot be reached
    ├── RecordUnavailable      the durable record (SQLite) cannot be written or read
    ├── ConfigError            a setting or config file is wrong (names the setting)
    ├── DeliveryFailed         a chat API refused or failed to take a message (retryable or not)
    └── ModelUnavailable       the language or embedding model cannot answer now (with a hint)

Third-party errors (redis, sqlite3, pydantic) are mapped to these at the storage and
HTTP boundaries, so the engine and the front ends handle one vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass


class SigOpsError(Exception):
    """Base of every error SigOps raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with one field of one record."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InvalidSignal(SigOpsError):
    """A record is not a valid signal; `problems` names each bad field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class PayloadError(SigOpsError):
    """The body as a whole cannot be used (bad JSON, empty, too many records)."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class QueueUnavailable(SigOpsError):
    """The signal stream cannot be reached; the caller should retry later."""


class RecordUnavailable(SigOpsError):
    """The durable record cannot be reached or written."""


class ConfigError(SigOpsError):
    """A setting or config file is wrong; the message names it."""


class DeliveryFailed(SigOpsError):
    """A chat platform did not take a message; says whether trying again can help, and when."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class ModelUnavailable(SigOpsError):
    """The language model cannot answer now; `hint` says what a person can do about it."""

    def __init__(self, reason: str, hint: str = "") -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(reason)
