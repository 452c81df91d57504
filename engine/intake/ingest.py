"""Ingest: turn request bodies into validated signals and put them on the stream."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine import metrics
from engine.errors import FieldProblem, PayloadError
from engine.ports import SignalQueue
from engine.signal import Rejected, Signal, validate_batch

JSON_TYPES = frozenset({"application/json", "text/json"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record refused before validation (a bad NDJSON line, a malformed webhook alert)."""

    problems: list[FieldProblem]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to a body: the ids stored and the records rejected, by index."""

    ids: list[str]
    rejected: list[Rejected] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": len(self.ids),
            "ids": self.ids,
            "rejected": [r.as_dict() for r in self.rejected],
        }


def decode_body(body: bytes, content_type: str) -> list[Any]:
    """Records from a JSON object, a JSON array or NDJSON; bad NDJSON lines become `Unreadable`."""
    if not body.strip():
        raise PayloadError("empty body: send a JSON object, a JSON array of objects, or NDJSON")
    if content_type in NDJSON_TYPES:
        return _ndjson(body)
    if content_type not in JSON_TYPES:
        accepted = ", ".join(sorted(JSON_TYPES | NDJSON_TYPES))
        raise PayloadError(
            f"content type {content_type or '(none)'!r} is not accepted; use one of {accepted}", status=415
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    if isinstance(parsed, dict):
        return [parsed]
    if isinstance(parsed, list):
        return parsed
    raise PayloadError(f"expected a JSON object or an array of objects, got {type(parsed).__name__}")


def _ndjson(body: bytes) -> list[Any]:
    records: list[Any] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            records.append(Unreadable([FieldProblem("record", f"line {number} is not valid JSON: {exc}")]))
    if not records:
        raise PayloadError("empty body: no NDJSON lines")
    return records


class Ingest:
    """Validates records and publishes the good ones; the HTTP layer only translates."""

    def __init__(
        self, queue: SignalQueue, *, max_records: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.queue = queue
        self.max_records = max_records
        self.clock = clock

    def check_size(self, records: Sequence[Any]) -> None:
        if len(records) > self.max_records:
            raise PayloadError(
                f"{len(records)} records in one request; the limit is {self.max_records} "
                "(SIGOPS_MAX_BATCH): split the batch",
                status=413,
            )

    async def accept(self, records: Sequence[Any]) -> IngestResult:
        """Validate and publish; raise QueueUnavailable if nothing could be stored."""
        self.check_size(records)
        readable: list[Any] = []
        positions: list[int] = []
        bad: list[Rejected] = []
        for index, record in enumerate(records):
            if isinstance(record, Unreadable):
                bad.append(Rejected(index, record.problems))
            else:
                readable.append(record)
                positions.append(index)
        good, invalid = validate_batch(readable)
        bad += [Rejected(positions[r.index], r.problems) for r in invalid]
        bad.sort(key=lambda r: r.index)
        return await self.publish(good, bad)

    async def publish(self, signals: Sequence[Signal], rejected: Sequence[Rejected] = ()) -> IngestResult:
        """Publish already-valid signals (the demo generator's path)."""
        if signals:
            await self.queue.publish(signals, self.clock())
            for kind, count in Counter(s.kind for s in signals).items():
                metrics.INGEST_ACCEPTED.labels(kind).inc(count)
        for bad in rejected:
            for problem in bad.problems[:1]:
                metrics.INGEST_REJECTED.labels(metrics.field_label(problem.field)).inc()
        return IngestResult([s.id for s in signals], list(rejected))
