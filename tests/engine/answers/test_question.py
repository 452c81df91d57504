"""Questions read in code: time phrases in the configured zone, services with typos, intent."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from engine.answers.question import parse_question

BERLIN = ZoneInfo("Europe/Berlin")
# Tuesday 2026-03-31 14:20 in Berlin (summer time began on Sunday 29 March).
NOW = datetime(2026, 3, 31, 14, 20, tzinfo=BERLIN).timestamp()
SERVICES = ["checkout", "payments", "auth", "search"]
SERIES = ["payments.latency_p99", "checkout.errors", "auth.login_failures"]


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, BERLIN).strftime("%a %d %H:%M")


@pytest.mark.parametrize(
    ("text", "since", "until", "window"),
    [
        ("what spiked on payments in the last 6 hours?", "Tue 31 08:20", "Tue 31 14:20", "last 6 hours"),
        ("anything in the past hour", "Tue 31 13:20", "Tue 31 14:20", "last hour"),
        ("errors since 9am", "Tue 31 09:00", "Tue 31 14:20", "since 09:00"),
        ("since 16:30?", "Mon 30 16:30", "Tue 31 14:20", "since 16:30"),
        ("what happened yesterday", "Mon 30 00:00", "Tue 31 00:00", "yesterday"),
        ("which services were noisiest this week?", "Mon 30 00:00", "Tue 31 14:20", "this week"),
        ("and last week?", "Mon 23 00:00", "Mon 30 00:00", "last week"),
        ("anything today", "Tue 31 00:00", "Tue 31 14:20", "today"),
        ("why did checkout alert at 3am?", "Tue 31 02:30", "Tue 31 03:30", "around 03:00"),
        ("how are things", "Mon 30 14:20", "Tue 31 14:20", "last 24 hours"),
    ],
)
def test_time_phrases_become_windows_in_the_local_zone(
    text: str, since: str, until: str, window: str
) -> None:
    q = parse_question(text, NOW, BERLIN, SERVICES, SERIES)
    assert (local(q.since), local(q.until), q.window) == (since, until, window)


def test_a_window_across_the_dst_change_is_in_wall_clock_days() -> None:
    monday = datetime(2026, 3, 30, 10, 0, tzinfo=BERLIN).timestamp()
    q = parse_question("what happened yesterday?", monday, BERLIN)
    assert q.until - q.since == 23 * 3600  # Sunday 29 March had 23 hours
    assert local(q.since) == "Sun 29 00:00"


def test_services_and_series_are_found_despite_case_and_typos() -> None:
    q = parse_question("Anything odd with PAYMNETS or auth.login_failures?", NOW, BERLIN, SERVICES, SERIES)
    assert q.services == ("payments", "auth") and q.series == ("auth.login_failures",)
    assert parse_question("how is the weather", NOW, BERLIN, SERVICES, SERIES).services == ()


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("what spiked on payments?", "spike"),
        ("why did checkout alert at 3am?", "why"),
        ("how many alerts yesterday?", "count"),
        ("compare checkout before and after the deploy", "compare"),
        ("which services were noisiest this week?", "list"),
        ("status of auth", "summary"),
    ],
)
def test_intent(text: str, intent: str) -> None:
    assert parse_question(text, NOW, BERLIN, SERVICES).intent == intent


def test_since_the_deploy_is_noticed() -> None:
    assert parse_question("anything odd with auth since the deploy?", NOW, BERLIN, SERVICES).since_change


@pytest.mark.parametrize(
    ("text", "since", "until", "window"),
    [
        ("what happened on sunday?", "Sun 29 00:00", "Mon 30 00:00", "on Sunday (Mar 29)"),  # a 23-hour day
        ("auth problems last monday", "Mon 30 00:00", "Tue 31 00:00", "on Monday (Mar 30)"),
        ("anything on tuesday", "Tue 31 00:00", "Tue 31 14:20", "on Tuesday (Mar 31)"),
        ("anything last tuesday", "Tue 24 00:00", "Wed 25 00:00", "on Tuesday (Mar 24)"),
    ],
)
def test_weekday_names(text: str, since: str, until: str, window: str) -> None:
    q = parse_question(text, NOW, BERLIN, SERVICES, SERIES)
    assert (local(q.since), local(q.until), q.window) == (since, until, window)


def test_sunday_the_clocks_went_forward_is_23_hours() -> None:
    q = parse_question("on sunday", NOW, BERLIN)
    assert q.until - q.since == 23 * 3600


@pytest.mark.parametrize(
    ("text", "window", "other", "label"),
    [
        ("today vs yesterday", "today", "Mon 30 00:00", "yesterday"),
        ("this week versus last week", "this week", "Mon 23 00:00", "last week"),
        (
            "errors in the last 6 hours compared with the 6 before",
            "last 6 hours",
            "Tue 31 02:20",
            "the 6 hours before",
        ),
    ],
)
def test_comparisons_read_both_windows(text: str, window: str, other: str, label: str) -> None:
    q = parse_question(text, NOW, BERLIN, SERVICES, SERIES)
    assert q.window == window and q.intent == "compare" and q.compare is not None
    assert (local(q.compare[0]), q.compare[2]) == (other, label)


@pytest.mark.parametrize(
    "text",
    ["after the checkout deploy", "since the config change", "since the last release", "after the rollback"],
)
def test_a_change_named_in_other_phrasings(text: str) -> None:
    assert parse_question(text, NOW, BERLIN, SERVICES, SERIES).since_change
