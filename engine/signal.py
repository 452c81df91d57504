"""The `Signal`: one operational observation, and its validation.

A signal is validated once, at ingest, with errors that name the field; after that the
stream and the workers trust it (`signals_from_json`).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import FieldProblem, InvalidSignal

Kind = Literal["metric", "event", "alert", "change", "log"]
Severity = Literal["info", "warning", "error", "critical"]
KINDS: tuple[str, ...] = ("metric", "event", "alert", "change", "log")
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

MAX_TEXT_CHARS = 8_192
MAX_LABELS = 32
MAX_LABEL_KEY_CHARS = 64
MAX_LABEL_VALUE_CHARS = 512
MAX_SERIES_CHARS = 200
MAX_ID_CHARS = 128
# Signals older than this are almost certainly a unit mistake, not a backfill.
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
MAX_FUTURE_S = 24 * 3600

_SEVERITY_ALIASES = {
    "warn": "warning",
    "err": "error",
    "crit": "critical",
    "page": "critical",
    "fatal": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "none": "info",
    "debug": "info",
    "notice": "info",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIELDS = frozenset({"id", "ts", "source", "kind", "series", "value", "labels", "text", "severity"})


def _iso_seconds(text: str, raw: str) -> float:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{raw[:40]!r} is neither ISO-8601 (2026-11-22T08:00:00Z) nor epoch seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_timestamp(raw: Any, *, now: float | None = None) -> float:
    """Turn ISO-8601 text or epoch seconds into epoch seconds (UTC), or raise ValueError."""
    if isinstance(raw, bool):
        raise ValueError("expected ISO-8601 text or epoch seconds, got a boolean")
    if isinstance(raw, int | float):
        ts = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise ValueError("empty timestamp")
        if len(text) >= 10 and text[4] == "-":  # looks like a date: skip the float attempt
            ts = _iso_seconds(text, raw)
        else:
            try:
                ts = float(text)
            except ValueError:
                ts = _iso_seconds(text, raw)
    elif isinstance(raw, datetime):
        ts = (raw if raw.tzinfo else raw.replace(tzinfo=UTC)).timestamp()
    else:
        raise ValueError(f"expected ISO-8601 text or epoch seconds, got {type(raw).__name__}")
    if not math.isfinite(ts):
        raise ValueError("timestamp is not a finite number")
    current = time.time() if now is None else now
    if ts > current + MAX_FUTURE_S:
        hint = " (epoch milliseconds? send seconds)" if ts > 1e11 else ""
        raise ValueError(f"{_iso(ts) if ts < 2e10 else ts} is more than a day in the future{hint}")
    if ts < EARLIEST_TS:
        raise ValueError(f"{_iso(ts)} is before 2000-01-01; is the unit right?")
    return ts


def _iso(ts: float) -> str:
    """The time as ISO-8601 for an error message; a number too far out for a date stays a number."""
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{ts:g}"


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
        if len(text) > MAX_ID_CHARS or _CONTROL.search(text):
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
            if _CONTROL.search(raw):
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
    canonical = orjson.dumps(
        [
            int(signal.ts * 1_000_000),  # microseconds: equal for ISO and epoch forms of one time
            signal.source,
            signal.kind,
            signal.series,
            signal.value,
            sorted(signal.labels.items()),
            signal.text,
            signal.severity,
        ]
    )
    return hashlib.blake2b(canonical, digest_size=12).hexdigest()


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
    for index, record in enumerate(records):
        signal = plain_signal(record)
        if signal is not None:
            good.append(signal)
            continue
        try:
            good.append(SignalInput.model_validate(record).to_signal())
        except ValidationError as exc:
            bad.append(Rejected(index, problems_from(exc)))
    return good, bad


def plain_signal(record: Any) -> Signal | None:
    """The fast path of validation, for a record in the plain shape most senders use.

    Exactly the fields of a signal, each already of its own JSON type and within its
    limits: the same `Signal` as `SignalInput` makes, at about half the cost. Anything
    else (a number sent as text, extra fields that become labels, a label that is a
    number, any problem at all) returns None and goes through `SignalInput`, which
    converts it or names the problem. A property test holds the two paths equal.
    """
    if type(record) is not dict or not _FIELDS.issuperset(record):
        return None
    get = record.get
    names = _plain_names(get("series"), get("source", "api"), get("kind", "metric"))
    value = _plain_value(get("value"))
    ts, labels = _plain_ts(get("ts")), _plain_labels(get("labels"))
    severity, signal_id, text = _plain_severity(get("severity")), _plain_id(get("id")), get("text")
    if (
        names is None
        or value is _NOT_PLAIN
        or ts is None
        or labels is None
        or severity is None
        or signal_id is None
        or (text is not None and (type(text) is not str or len(text) > MAX_TEXT_CHARS))
    ):
        return None
    series, source, kind = names
    if value is None and kind == "metric":
        return None
    signal = Signal(signal_id, ts, source, kind, series, value, labels, text, severity)
    if not signal_id:
        signal.id = content_id(signal)
    return signal


_NOT_PLAIN: Any = object()  # a value the fast path leaves to the careful one


def _plain_names(series: Any, source: Any, kind: Any) -> tuple[str, str, str] | None:
    if type(series) is not str or type(source) is not str or type(kind) is not str:
        return None
    series, source, kind = series.strip(), source.strip(), kind.strip().lower()
    if (
        not 0 < len(series) <= MAX_SERIES_CHARS
        or not 0 < len(source) <= 64
        or kind not in KINDS
        or _CONTROL.search(series)
        or _CONTROL.search(source)
    ):
        return None
    return series, source, kind


def _plain_value(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is int:
        # Past what a float holds, the careful path says so.
        return float(value) if value.bit_length() <= 1000 else _NOT_PLAIN
    if type(value) is float and math.isfinite(value):
        return value
    return _NOT_PLAIN


def _plain_ts(raw: Any) -> float | None:
    if raw is None:
        return time.time()
    if type(raw) is float or type(raw) is int or type(raw) is str:
        try:
            return parse_timestamp(raw)
        except ValueError:
            return None
    return None


def _plain_labels(labels: Any) -> dict[str, str] | None:
    if labels is None:
        return {}
    if type(labels) is not dict or len(labels) > MAX_LABELS:
        return None
    for key, label in labels.items():
        if (
            type(key) is not str
            or type(label) is not str
            or not 0 < len(key) <= MAX_LABEL_KEY_CHARS
            or len(label) > MAX_LABEL_VALUE_CHARS
        ):
            return None
    return dict(labels)


def _plain_severity(severity: Any) -> str | None:
    if severity is None:
        return "info"
    if type(severity) is not str:
        return None
    name = severity.strip().lower()
    name = _SEVERITY_ALIASES.get(name, name)
    return name if name in SEVERITIES else None


def _plain_id(raw: Any) -> str | None:
    if raw is None:
        return ""
    if type(raw) is not str and type(raw) is not int:
        return None
    text = str(raw).strip()
    return None if len(text) > MAX_ID_CHARS or _CONTROL.search(text) else text


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
