"""The `Signal`: one operational observation, and its validation.

A signal is validated once, at ingest, with errors that name the field; after that the
stream and the workers trust it (`signals_from_json`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import FieldProblem, InvalidSignal
from engine.signal_fast import (  # the limits and the fast path live there (compiled when possible)
    _FIELDS,
    _SEVERITY_ALIASES,
    KINDS,
    MAX_ID_CHARS,
    MAX_LABEL_KEY_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_LABELS,
    MAX_SERIES_CHARS,
    MAX_TEXT_CHARS,
    SEVERITIES,
    canonical_id,
    has_control,
    parse_timestamp,
    plain_fields,
)

Kind = Literal["metric", "event", "alert", "change", "log"]
Severity = Literal["info", "warning", "error", "critical"]
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(slots=True)
class Signal:
    """One observation: a metric point, an event, an alert, a change or a log line.

    Build one with `make_signal` or `validate_signal` (which validate); the constructor
    itself trusts its arguments, as the stream and the workers do. Treat it as
    immutable: it is not frozen only because frozen construction costs 5x on the hot path.
    """

    id: str
    ts: float
    source: str
    kind: str
    series: str
    value: float | None
    labels: Mapping[str, str]
    text: str | None
    severity: str

    @property
    def when(self) -> datetime:
        """`ts` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.ts, UTC)

    @property
    def service(self) -> str:
        """The service this signal belongs to: its `service` label, else the series prefix."""
        return self.labels.get("service") or self.series.split(".", 1)[0]


class SignalInput(BaseModel):
    """The validation of a signal record as it arrives; `to_signal` gives the `Signal`."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, validate_default=True)

    id: str = ""
    ts: float = Field(default_factory=time.time)
    source: str = Field(default="api", min_length=1, max_length=64)
    kind: Kind = "metric"
    series: str = Field(min_length=1, max_length=MAX_SERIES_CHARS)
    value: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    severity: Severity = "info"

    @model_validator(mode="before")
    @classmethod
    def _keep_extras_as_labels(cls, data: Any) -> Any:
        """Unknown scalar fields become labels (room permitting); others are dropped."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a signal is a JSON object, got {_json_type(data)}")
        extras = [k for k in data if k not in _FIELDS]
        if not extras:
            return data
        record = {k: v for k, v in data.items() if k in _FIELDS}
        labels = record.get("labels")
        if labels is None or isinstance(labels, Mapping):
            merged = dict(labels or {})
            for key in extras:
                value = data[key]
                if (
                    isinstance(value, str | int | float | bool)
                    and isinstance(key, str)
                    and key not in merged
                    and len(merged) < MAX_LABELS
                ):
                    merged[key] = value
            record["labels"] = merged
        return record

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, raw: Any) -> Any:
        if raw is None:
            return ""
        if not isinstance(raw, str | int):
            raise ValueError("id must be text")
        text = str(raw).strip()
        if len(text) > MAX_ID_CHARS or has_control(text):
            raise ValueError(f"id must be at most {MAX_ID_CHARS} printable characters")
        return text

    @field_validator("ts", mode="before")
    @classmethod
    def _check_ts(cls, raw: Any) -> float:
        return time.time() if raw is None else parse_timestamp(raw)

    @field_validator("series", "source", mode="before")
    @classmethod
    def _check_name(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            raw = raw.strip()
            if has_control(raw):
                raise ValueError("must not contain control characters")
        return raw

    @field_validator("kind", mode="before")
    @classmethod
    def _lower_kind(cls, raw: Any) -> Any:
        return raw.strip().lower() if isinstance(raw, str) else raw

    @field_validator("severity", mode="before")
    @classmethod
    def _normalise_severity(cls, raw: Any) -> Any:
        if raw is None:
            return "info"
        if isinstance(raw, str):
            name = raw.strip().lower()
            return _SEVERITY_ALIASES.get(name, name)
        return raw

    @field_validator("labels", mode="before")
    @classmethod
    def _check_labels(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"labels must be an object of name: value, got {_json_type(raw)}")
        if len(raw) > MAX_LABELS:
            raise ValueError(f"{len(raw)} labels; at most {MAX_LABELS} are kept per signal")
        if all(
            type(k) is str
            and type(v) is str
            and 0 < len(k) <= MAX_LABEL_KEY_CHARS
            and len(v) <= MAX_LABEL_VALUE_CHARS
            for k, v in raw.items()
        ):
            return raw  # the common case: already text, within limits
        labels: dict[str, str] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not key or len(key) > MAX_LABEL_KEY_CHARS:
                raise ValueError(f"label name {str(key)[:70]!r} must be 1-{MAX_LABEL_KEY_CHARS} characters")
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, int | float):
                value = repr(value) if isinstance(value, float) else str(value)
            elif value is None:
                continue
            elif not isinstance(value, str):
                raise ValueError(f"label {key!r} must be text or a number, got {_json_type(value)}")
            if len(value) > MAX_LABEL_VALUE_CHARS:
                raise ValueError(f"label {key!r} is longer than {MAX_LABEL_VALUE_CHARS} characters")
            labels[key] = value
        return labels

    @model_validator(mode="after")
    def _metric_has_value(self) -> SignalInput:
        if self.kind == "metric" and self.value is None:
            raise ValueError("a metric needs a numeric value")
        return self

    def to_signal(self) -> Signal:
        return Signal(
            self.id or content_id(self),
            self.ts,
            self.source,
            self.kind,
            self.series,
            self.value,
            self.labels,
            self.text,
            self.severity,
        )


def content_id(signal: SignalInput | Signal) -> str:
    """A stable id from the signal's content, so a resend is recognised."""
    return canonical_id(
        signal.ts,
        signal.source,
        signal.kind,
        signal.series,
        signal.value,
        signal.labels,
        signal.text,
        signal.severity,
    )


def signals_to_json(signals: Sequence[Signal]) -> bytes:
    """Signals as one compact JSON array of field arrays (the stream's entry format)."""
    return orjson.dumps(
        [(s.id, s.ts, s.source, s.kind, s.series, s.value, s.labels, s.text, s.severity) for s in signals]
    )


def signals_from_json(data: bytes) -> list[Signal]:
    """The inverse of `signals_to_json`, trusting the content (it was validated at ingest)."""
    return [Signal(*fields) for fields in orjson.loads(data)]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record of a batch that failed validation, by its position in the batch."""

    index: int
    problems: list[FieldProblem]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "errors": [p.as_dict() for p in self.problems]}


def problems_from(exc: ValidationError) -> list[FieldProblem]:
    """Pydantic's errors as field problems with short, human messages."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "record"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "finite_number":
            message = "must be a finite number (NaN and infinity are refused)"
        elif error["type"] == "literal_error" and field == "kind":
            message = f"must be one of {', '.join(KINDS)}"
        elif error["type"] == "literal_error" and field == "severity":
            message = f"must be one of {', '.join(SEVERITIES)}"
        problems.append(FieldProblem(field, message))
    return problems


def validate_signal(record: Any) -> Signal:
    """Validate one record or raise `InvalidSignal` naming each bad field."""
    try:
        return SignalInput.model_validate(record).to_signal()
    except ValidationError as exc:
        raise InvalidSignal(problems_from(exc)) from exc


def make_signal(**fields: Any) -> Signal:
    """A validated signal from keyword arguments (for code that creates signals)."""
    return validate_signal(fields)


def validate_batch(records: Iterable[Any]) -> tuple[list[Signal], list[Rejected]]:
    """Validate each record; keep the good ones and say which were rejected and why."""
    good: list[Signal] = []
    bad: list[Rejected] = []
    now = time.time()
    for index, record in enumerate(records):
        signal = plain_signal(record, now)
        if signal is not None:
            good.append(signal)
            continue
        try:
            good.append(SignalInput.model_validate(record).to_signal())
        except ValidationError as exc:
            bad.append(Rejected(index, problems_from(exc)))
    return good, bad


def plain_signal(record: Any, now: float | None = None) -> Signal | None:
    """The fast path of validation (`engine.signal_fast`), for a record in the plain shape most
    senders use: the same `Signal` as `SignalInput` makes, or None to take the careful path."""
    fields = plain_fields(record, time.time() if now is None else now)
    if fields is None:
        return None
    return Signal(*fields)


def _json_type(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__
