"""Signal validation: bad records are refused with the field named; good ones normalised."""

from __future__ import annotations

import time

import pytest

from engine.errors import InvalidSignal
from engine.signal import parse_timestamp, signals_from_json, signals_to_json, validate_batch, validate_signal

NOW = 1_795_330_000.0


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        ({"series": "a.b", "value": float("nan")}, "value", "finite"),
        ({"series": "a.b", "value": float("inf")}, "value", "finite"),
        ({"series": "a.b", "value": "fast"}, "value", "valid number"),
        ({"value": 1}, "series", "required"),
        ({"series": "a.b"}, "record", "metric needs a numeric value"),
        ({"series": "a.b", "value": 1, "ts": 1_795_000_000_000}, "ts", "milliseconds"),
        ({"series": "a.b", "value": 1, "ts": 12}, "ts", "before 2000"),
        ({"series": "a.b", "value": 1, "ts": "yesterday-ish"}, "ts", "ISO-8601"),
        ({"series": "a.b", "value": 1, "kind": "metricz"}, "kind", "one of metric"),
        ({"series": "a.b", "value": 1, "severity": "meh"}, "severity", "one of info"),
        ({"series": "a.b", "kind": "event", "text": "x" * 9000}, "text", "8192"),
        ({"series": "a.b", "value": 1, "labels": ["x"]}, "labels", "object"),
        ({"series": "a.b", "value": 1, "labels": {f"k{i}": "v" for i in range(40)}}, "labels", "at most 32"),
        ({"series": "a.b", "value": 1, "labels": {"k": {"nested": 1}}}, "labels", "text or a number"),
        ({"series": "bad\x00name", "value": 1}, "series", "control"),
        ("just text", "record", "JSON object"),
    ],
)
def test_bad_records_name_the_field(record: object, field: str, fragment: str) -> None:
    with pytest.raises(InvalidSignal) as caught:
        validate_signal(record)
    problems = {p.field: p.message for p in caught.value.problems}
    assert field in problems, problems
    assert fragment in problems[field]


def test_timestamps_accept_iso_with_nanoseconds_and_epoch_seconds() -> None:
    iso = parse_timestamp("2026-11-22T03:58:22.017767703Z", now=NOW)
    assert iso == pytest.approx(1_795_319_902.017767, abs=1e-5)
    assert parse_timestamp("2026-11-22 03:58:22", now=NOW) == pytest.approx(1_795_319_902.0)
    assert parse_timestamp(1_795_319_902, now=NOW) == 1_795_319_902.0
    assert parse_timestamp("1795319902.5", now=NOW) == 1_795_319_902.5
    assert parse_timestamp("2026-11-22T05:58:22+02:00", now=NOW) == pytest.approx(1_795_319_902.0)


def test_missing_ts_defaults_to_now() -> None:
    before = time.time()
    signal = validate_signal({"series": "a.b", "value": 1})
    assert before <= signal.ts <= time.time()


def test_id_is_stable_for_the_same_content_so_a_resend_is_recognised() -> None:
    record = {"series": "pay.err", "value": 3, "ts": 1_795_319_902, "labels": {"b": "2", "a": "1"}}
    first = validate_signal(record)
    again = validate_signal({**record, "labels": {"a": "1", "b": "2"}})
    other = validate_signal({**record, "value": 4})
    assert first.id == again.id
    assert first.id != other.id
    assert validate_signal({**record, "id": "mine-1"}).id == "mine-1"


def test_unknown_fields_are_kept_as_labels_not_crashes() -> None:
    signal = validate_signal(
        {"series": "a.b", "value": 1, "host": "web-1", "cpu_count": 8, "nested": {"x": 1}, "tags": [1]}
    )
    assert signal.labels == {"host": "web-1", "cpu_count": "8"}


def test_severity_aliases_and_label_values_are_normalised() -> None:
    signal = validate_signal(
        {"series": "a.b", "value": 1, "severity": "WARN", "labels": {"n": 3, "ok": True, "none": None}}
    )
    assert signal.severity == "warning"
    assert signal.labels == {"n": "3", "ok": "true"}


def test_batch_keeps_good_records_and_reports_bad_by_index() -> None:
    good, bad = validate_batch(
        [{"series": "a", "value": 1}, {"series": "a", "value": "x"}, {"series": "b", "value": 2}, 7]
    )
    assert [s.series for s in good] == ["a", "b"]
    assert [r.index for r in bad] == [1, 3]


def test_round_trip_through_the_stream_format() -> None:
    signals = [
        validate_signal({"series": "a.b", "value": 1.5, "labels": {"service": "pay"}}),
        validate_signal({"series": "a.log", "kind": "log", "text": "boom", "severity": "error"}),
    ]
    assert signals_from_json(signals_to_json(signals)) == signals
    assert signals[0].service == "pay" and signals[1].service == "a"
