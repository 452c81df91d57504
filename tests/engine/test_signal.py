"""Signal validation: bad records are refused with the field named; good ones normalised."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidSignal
from engine.signal import (
    SignalInput,
    parse_timestamp,
    plain_signal,
    signals_from_json,
    signals_to_json,
    validate_batch,
    validate_signal,
)

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


_ISO = [
    "2026-11-30T10:00:00Z",
    "2026-11-30 10:00:00",
    "2026-11-30T10:00:00+02:00",
    "1795000000",
    " 1795000000.5 ",
]
_NAMES = st.sampled_from(["shop.latency", " a.b ", "x" * 200, "x" * 201, "a\x01b", "", "api", " "]) | st.text(
    max_size=12
)


def _mostly(usual: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """Usually a plain value a sender would post, now and then an odd one."""
    return st.one_of(usual, usual, usual, odd)


_fields = {
    "id": _mostly(
        st.text(max_size=12) | st.integers(0, 10**6),
        st.none() | st.booleans() | st.text(min_size=120, max_size=140),
    ),
    "ts": _mostly(
        st.floats(1.6e9, 1.79e9) | st.integers(1_600_000_000, 1_790_000_000) | st.sampled_from(_ISO),
        st.floats() | st.integers(-(10**13), 10**13) | st.text(max_size=25) | st.booleans() | st.none(),
    ),
    "source": _mostly(_NAMES, st.none() | st.integers() | st.text(min_size=60, max_size=70)),
    "kind": _mostly(
        st.sampled_from(["metric", "event", " Alert ", "CHANGE", "log"]),
        st.sampled_from(["bogus", ""]) | st.integers(),
    ),
    "value": _mostly(
        st.floats(-1e9, 1e9) | st.integers(-1000, 1000),
        st.none()
        | st.floats()
        | st.integers(-(2**60), 2**60)
        | st.sampled_from(["1.5", "x"])
        | st.booleans(),
    ),
    "labels": _mostly(
        st.dictionaries(st.sampled_from(["service", "host", "", "k" * 65]), st.text(max_size=8), max_size=3),
        st.none()
        | st.dictionaries(
            st.text(max_size=70),
            st.one_of(st.text(max_size=600), st.integers(), st.booleans(), st.none()),
            max_size=35,
        )
        | st.lists(st.integers(), max_size=2),
    ),
    "text": _mostly(st.none() | st.text(max_size=20), st.integers() | st.just("x" * 8193)),
    "severity": _mostly(
        st.sampled_from(["info", "WARN", "err", "critical", " Page "]),
        st.none() | st.just("meh") | st.integers(),
    ),
    "host": st.text(max_size=5),  # an extra field: the careful path turns it into a label
}
_records = st.fixed_dictionaries({"series": _NAMES}, optional=_fields)
_printable = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\x7f"), min_size=1, max_size=40
)
_plain_records = st.fixed_dictionaries(
    {"series": _printable.filter(str.strip), "value": st.floats(-1e12, 1e12) | st.integers(-(10**9), 10**9)},
    optional={
        "id": _printable | st.integers(0, 10**9),
        "ts": st.floats(1.6e9, 1.79e9) | st.integers(1_600_000_000, 1_790_000_000) | st.sampled_from(_ISO),
        "source": _printable.filter(str.strip),
        "kind": st.sampled_from(["metric", "event", " Alert ", "CHANGE", "log"]),
        "labels": st.dictionaries(_printable, st.text(max_size=30), max_size=5),
        "text": st.none() | st.text(max_size=50),
        "severity": st.sampled_from(["info", "WARN", "err", "critical", " Page ", "notice"]),
    },
)


@settings(max_examples=1500, deadline=None)
@given(record=_records)
def test_the_fast_path_of_validation_makes_what_the_careful_one_does(record: dict) -> None:
    """Whatever a sender posts, the plain fast path either declines it or agrees exactly."""
    fast = plain_signal(record)
    if fast is None:
        return
    careful = SignalInput.model_validate(record).to_signal()  # must accept what the fast path did
    if "ts" not in record or record["ts"] is None:
        careful.ts = fast.ts  # both stamped 'now', a moment apart
        careful.id = careful.id if str(record.get("id") or "").strip() else fast.id  # content ids of "now"
    assert fast == careful


@settings(max_examples=500, deadline=None)
@given(record=_plain_records)
def test_plain_records_take_the_fast_path_and_agree(record: dict) -> None:
    careful = SignalInput.model_validate(record).to_signal()
    fast = plain_signal(record)
    assert fast is not None, "a plain record went the slow way"
    if "ts" not in record:
        careful.ts = fast.ts
        careful.id = careful.id if str(record.get("id") or "").strip() else fast.id  # content ids of "now"
    assert fast == careful


_ODD = {
    "series": st.sampled_from(["", " ", "x" * 201, "a\x01b"]) | st.integers() | st.none(),
    "source": st.sampled_from(["", "s" * 65, "a\x7fb"]) | st.integers() | st.none(),
    "kind": st.sampled_from(["bogus", ""]) | st.integers(),
    "value": st.sampled_from(["1.5", "x", float("nan"), float("inf"), True, 2**1100]) | st.none(),
    "ts": st.sampled_from([True, "soon", 1e13, 12, float("nan"), "2100-01-01T00:00:00Z"]) | st.none(),
    "labels": st.sampled_from(
        [
            ["x"],
            "x",
            {"k": 1},
            {"": "v"},
            {"k" * 65: "v"},
            {"k": "v" * 513},
            {f"k{i}": "v" for i in range(33)},
        ]
    ),
    "text": st.sampled_from([1, "x" * 8193]),
    "severity": st.sampled_from(["meh", "", 3, " Page "]),
    "id": st.sampled_from([True, "x" * 129, "a\x00b", 1.5, "  "]),
}


@settings(max_examples=400, deadline=None)
@given(record=_plain_records, field=st.sampled_from(sorted(_ODD)), data=st.data())
def test_one_odd_field_in_a_plain_record_goes_the_careful_way_or_agrees(
    record: dict, field: str, data: st.DataObject
) -> None:
    record = {**record, field: data.draw(_ODD[field])}
    fast = plain_signal(record)
    if fast is None:
        return
    careful = SignalInput.model_validate(record).to_signal()
    if record.get("ts") is None:
        careful.ts = fast.ts
        careful.id = careful.id if str(record.get("id") or "").strip() else fast.id  # content ids of "now"
    assert fast == careful


def test_the_usual_shapes_take_the_fast_path() -> None:
    usual = [
        {"series": "shop.latency", "value": 12.5, "ts": 1_795_000_000, "labels": {"service": "shop"}},
        {"series": "shop.deploy", "kind": "change", "text": "v2", "ts": "2026-11-30T10:00:00Z", "id": "d1"},
        {"series": "shop.errors", "value": 3, "severity": "WARN", "source": "vector"},
    ]
    assert all(plain_signal(record) is not None for record in usual)
    assert plain_signal({"series": "a.b", "value": "1.5"}) is None  # text for a number: converted carefully
    assert validate_batch([{"series": "a.b", "value": "1.5"}])[0][0].value == 1.5


def test_content_ids_keep_the_form_every_recorded_id_depends_on() -> None:
    """Ids recorded last year must match a resend today: the canonical form is frozen, and
    the careful path gives the same id as the fast one."""
    records = [
        {"series": "checkout.latency_ms", "value": 412.5, "ts": 1795000000.25,
         "labels": {"service": "checkout", "env": "prod"}},
        {"series": "checkout.deploy", "kind": "change", "ts": "2026-11-22T08:00:00Z",
         "text": "v1.8.4", "source": "ci"},
    ]  # fmt: skip
    good, bad = validate_batch(records)
    assert bad == []
    assert [s.id for s in good] == ["c9c963975d439f1000902720", "c867cab825b7982bbda5dde6"]
    careful = [validate_signal({**r, "labels": {**r.get("labels", {}), "n": "1"}}) for r in records[:1]]
    assert careful[0].id != good[0].id  # a label more is another signal
    assert validate_signal(records[0]).id == good[0].id
