"""The fast path of signal validation, for a record in the plain shape most senders use.

Exactly the fields of a signal, each already of its own JSON type and within its limits:
the same fields as `SignalInput` (engine/signal.py) makes, at a fraction of the cost.
Anything else (a number sent as text, extra fields that become labels, a label that is a
number, any problem at all) gives None and goes through `SignalInput`, which converts it
or names the problem. A property test holds the two paths equal.

Also the limits of a signal and `parse_timestamp`, which both paths use. This module is
compiled with mypyc at install when a C compiler is there (setup.py), like the detector:
it is most of what the HTTP server spends per signal. Its constants are `Final`: compiled,
a module-level name that is not is looked up in a dict at each use.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

KINDS: Final[tuple[str, ...]] = ("metric", "event", "alert", "change", "log")
SEVERITIES: Final[tuple[str, ...]] = ("info", "warning", "error", "critical")
MAX_TEXT_CHARS: Final = 8_192
MAX_LABELS: Final = 32
MAX_LABEL_KEY_CHARS: Final = 64
MAX_LABEL_VALUE_CHARS: Final = 512
MAX_SERIES_CHARS: Final = 200
MAX_ID_CHARS: Final = 128
# Signals older than this are almost certainly a unit mistake, not a backfill.
EARLIEST_TS: Final = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
MAX_FUTURE_S: Final = 24 * 3600

_SEVERITY_ALIASES: Final = {
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
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# The library functions called per record, bound once: compiled, `module.name` is an
# attribute lookup on the module at every call.
_blake2b: Final = hashlib.blake2b
_dumps: Final = orjson.dumps
_isfinite: Final = math.isfinite
_clock: Final = time.time
_FIELDS: Final = frozenset({"id", "ts", "source", "kind", "series", "value", "labels", "text", "severity"})


def has_control(text: str) -> bool:
    """Whether `text` holds a control character (what `_CONTROL` finds). Printable text has
    none, and `isprintable` is a cheap test; only other text needs the regex."""
    return not text.isprintable() and _CONTROL.search(text) is not None


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
    if isinstance(raw, (int, float)):  # a tuple: `int | float` builds a union on every call
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
    if not _isfinite(ts):
        raise ValueError("timestamp is not a finite number")
    current = _clock() if now is None else now
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


# id, ts, source, kind, series, value, labels, text, severity
Fields = tuple[str, float, str, str, str, float | None, dict[str, str], str | None, str]


def plain_fields(record: Any, now: float) -> Fields | None:
    """The fields of a `Signal` (its content id when the record has no id) from a record in the plain
    shape, or None for any other record (see the module's docstring). `now`: the time, for a
    record without one and for the future check (one clock reading serves a batch)."""
    if type(record) is not dict or not _FIELDS.issuperset(record):
        return None
    fields: dict[str, Any] = record  # typed: compiled, `fields.get` is then a direct call
    names = _plain_names(fields.get("series"), fields.get("source", "api"), fields.get("kind", "metric"))
    value = _plain_value(fields.get("value"))
    ts, labels = _plain_ts(fields.get("ts"), now), _plain_labels(fields.get("labels"))
    severity, signal_id = _plain_severity(fields.get("severity")), _plain_id(fields.get("id"))
    text = fields.get("text")
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
    if not signal_id:
        signal_id = canonical_id(ts, source, kind, series, value, labels, text, severity)
    return signal_id, ts, source, kind, series, value, labels, text, severity


def canonical_id(
    ts: float,
    source: str,
    kind: str,
    series: str,
    value: float | None,
    labels: Mapping[str, str],
    text: str | None,
    severity: str,
) -> str:
    """The id a signal without one gets, from its content, so a resend is recognised.
    Its form never changes: every id already recorded depends on it."""
    canonical = _dumps(
        [
            int(ts * 1_000_000),  # microseconds: equal for ISO and epoch forms of one time
            source,
            kind,
            series,
            value,
            sorted(labels.items()),
            text,
            severity,
        ]
    )
    return _blake2b(canonical, digest_size=12).hexdigest()


_NOT_PLAIN: Final[Any] = object()  # a value the fast path leaves to the careful one


def _plain_names(series: Any, source: Any, kind: Any) -> tuple[str, str, str] | None:
    if type(series) is not str or type(source) is not str or type(kind) is not str:
        return None
    series, source, kind = series.strip(), source.strip(), kind.strip().lower()
    if (
        not 0 < len(series) <= MAX_SERIES_CHARS
        or not 0 < len(source) <= 64
        or kind not in KINDS
        or has_control(series)
        or has_control(source)
    ):
        return None
    return series, source, kind


def _plain_value(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is int:
        # Past what a float holds, the careful path says so.
        return float(value) if value.bit_length() <= 1000 else _NOT_PLAIN
    if type(value) is float and _isfinite(value):
        return value
    return _NOT_PLAIN


def _plain_ts(raw: Any, now: float) -> float | None:
    if raw is None:
        return now
    if type(raw) is float or type(raw) is int or type(raw) is str:
        try:
            return parse_timestamp(raw, now=now)
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
    return None if len(text) > MAX_ID_CHARS or has_control(text) else text
