"""Reading a question in code: its time window, the services and series it names, its intent.

Small local models are poor at this kind of bookkeeping, so it is done here, before
retrieval: "what spiked on paymnets since 9am?" becomes the window 09:00–now in the
configured time zone, the service `payments` (a typo tolerated), and the intent
`spike`. Nothing here calls a model.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from typing import Literal

Intent = Literal["spike", "why", "count", "compare", "list", "summary"]

DEFAULT_WINDOW_S = 24 * 3600
AT_HALF_WIDTH_S = 30 * 60  # "at 3am" looks 30 minutes either side

_UNIT_S = {"minute": 60, "min": 60, "m": 60, "hour": 3600, "hr": 3600, "h": 3600, "day": 86400, "d": 86400,
           "week": 7 * 86400, "w": 7 * 86400}  # fmt: skip
_LAST = re.compile(r"\b(?:last|past|previous)\s+(\d+|an?|one|two|three|six|twelve)?\s*"
                   r"(minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|w)\b", re.I)  # fmt: skip
_CLOCK = r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?"
_SINCE_CLOCK = re.compile(rf"\bsince\s+{_CLOCK}\b", re.I)
_AT_CLOCK = re.compile(rf"\b(?:at|around)\s+{_CLOCK}\b", re.I)
# "since the deploy", "after the checkout deploy", "since the config change", "after the flag change"
_SINCE_CHANGE = re.compile(
    r"\b(since|after|before and after)\s+(the\s+)?(last\s+|latest\s+)?([\w.\-]+\s+){0,2}?"
    r"(deploy\w*|release|rollout|change|rollback|migration)\b",
    re.I,
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY = re.compile(r"\b(last\s+|on\s+|this\s+past\s+)?(" + "|".join(_WEEKDAYS) + r")s?\b", re.I)
# "today vs yesterday", "this week versus last week", "compared with yesterday"
_VERSUS = re.compile(r"\s+(?:vs\.?|versus|compared (?:to|with)|against)\s+", re.I)
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "six": 6, "twelve": 12}
_WORD = re.compile(r"[A-Za-z0-9_.\-]+")

_INTENTS: list[tuple[Intent, re.Pattern[str]]] = [
    ("why", re.compile(r"\b(why|cause[ds]?|reason|root cause|what happened)\b", re.I)),
    ("count", re.compile(r"\b(how many|how often|count|number of)\b", re.I)),
    ("compare", re.compile(r"\b(compare|compared|versus|vs\.?|than|before and after)\b", re.I)),
    ("list", re.compile(r"\b(which|list|noisiest|loudest|top|worst|most)\b", re.I)),
    (
        "spike",
        re.compile(r"\b(spik\w*|jump\w*|surg\w*|peak\w*|high|elevated|odd|weird|unusual|anomal\w*)\b", re.I),
    ),
]


@dataclass(frozen=True, slots=True)
class Question:
    """A question as code understood it."""

    text: str
    since: float
    until: float
    window: str  # how the window reads back to people: "last 6 hours", "yesterday", "around 03:00"
    services: tuple[str, ...]
    series: tuple[str, ...]
    intent: Intent
    at: float | None = None  # the moment asked about ("why did checkout alert at 3am?")
    since_change: bool = False  # "since the deploy": the window starts at the service's last change
    compare: tuple[float, float, str] | None = None  # "today vs yesterday": the other window
    explicit_window: bool = False  # the question named a time (not the default last 24 hours)


def parse_question(
    text: str, now: float, tz: tzinfo, services: Iterable[str] = (), series: Iterable[str] = ()
) -> Question:
    """Window, entities and intent of a question; unknown parts fall back to the last 24 h, everything."""
    left, right = [*_VERSUS.split(text, maxsplit=1), ""][:2]
    since, until, window, at = _window(left, now, tz)
    explicit = window != _DEFAULT_LABEL
    compare = _other_window(right, since, until, window, now, tz) if right else None
    found_services, found_series = _entities(text, list(services), list(series))
    since_change = bool(_SINCE_CHANGE.search(text))
    intent: Intent = "compare" if compare else _intent(text)
    return Question(
        text, since, until, window, found_services, found_series, intent, at, since_change, compare, explicit
    )


_DEFAULT_LABEL = "last 24 hours"


def _other_window(
    text: str, since: float, until: float, label: str, now: float, tz: tzinfo
) -> tuple[float, float, str] | None:
    """The window a comparison is against: named ("yesterday"), or the period before ("last")."""
    other_since, other_until, other_label, _ = _window(text, now, tz)
    if other_label != _DEFAULT_LABEL:
        return other_since, other_until, other_label
    if re.search(r"\b(last|previous|before|prior)\b", text, re.I):
        if label == "this week":  # the calendar week before
            return since - 7 * 86400, since, "last week"
        length = until - since
        return since - length, since, f"the {label.removeprefix('last ')} before"
    return None


def _window(text: str, now: float, tz: tzinfo) -> tuple[float, float, str, float | None]:
    local = datetime.fromtimestamp(now, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if re.search(r"\blast week\b", text, re.I):  # the calendar week before this one, not 7 days
        this_monday = midnight - timedelta(days=midnight.weekday())
        return (this_monday - timedelta(days=7)).timestamp(), this_monday.timestamp(), "last week", None
    if match := _LAST.search(text):
        count_text = (match.group(1) or "1").lower()
        count = _NUMBER_WORDS.get(count_text) or int(count_text)
        unit = match.group(2).lower().rstrip("s")
        seconds = count * _UNIT_S.get(unit, _UNIT_S.get(unit[:1], 3600))
        label = f"last {count} {_unit_name(unit)}s" if count != 1 else f"last {_unit_name(unit)}"
        return now - seconds, now, label, None
    if match := _WEEKDAY.search(text):
        return _weekday(local, midnight, match)
    if match := _SINCE_CLOCK.search(text):
        start = _today_at(local, match)
        if start > local:
            start -= timedelta(days=1)
        return start.timestamp(), now, f"since {start:%H:%M}", None
    if re.search(r"\byesterday\b", text, re.I):
        start = midnight - timedelta(days=1)
        return start.timestamp(), midnight.timestamp(), "yesterday", None
    if re.search(r"\b(last night|overnight|tonight)\b", text, re.I):
        start = midnight - timedelta(hours=2)  # 22:00 the evening before, to 08:00
        end = min(midnight + timedelta(hours=8), local)
        return start.timestamp(), end.timestamp(), "overnight", None
    if re.search(r"\bthis week\b", text, re.I):
        monday = midnight - timedelta(days=midnight.weekday())
        return monday.timestamp(), now, "this week", None
    if re.search(r"\btoday\b|\bthis morning\b", text, re.I):
        return midnight.timestamp(), now, "today", None
    if match := _AT_CLOCK.search(text):
        moment = _today_at(local, match)
        if moment > local:
            moment -= timedelta(days=1)
        at = moment.timestamp()
        return at - AT_HALF_WIDTH_S, min(now, at + AT_HALF_WIDTH_S), f"around {moment:%H:%M}", at
    return now - DEFAULT_WINDOW_S, now, _DEFAULT_LABEL, None


def _weekday(local: datetime, midnight: datetime, match: re.Match[str]) -> tuple[float, float, str, None]:
    """ "on Saturday", "last Tuesday": that day, the most recent one (today only without "last")."""
    day = _WEEKDAYS.index(match.group(2).lower())
    back = (midnight.weekday() - day) % 7
    if back == 0 and (match.group(1) or "").strip().lower().startswith("last"):
        back = 7
    start = (midnight - timedelta(days=back)).replace(tzinfo=midnight.tzinfo)
    # Local midnights by date, so a DST change that day is a 23- or 25-hour day.
    end = datetime.combine(start.date() + timedelta(days=1), time(0), tzinfo=midnight.tzinfo)
    until = min(end.timestamp(), local.timestamp())
    return start.timestamp(), until, f"on {start:%A} ({start:%b %d})", None


def _today_at(local: datetime, match: re.Match[str]) -> datetime:
    hour, minute, meridiem = int(match.group(1)), int(match.group(2) or 0), (match.group(3) or "").lower()
    if meridiem == "pm" and hour < 12:
        hour += 12
    if meridiem == "am" and hour == 12:
        hour = 0
    hour, minute = min(hour, 23), min(minute, 59)
    # Build the wall-clock time in the zone (a DST gap or overlap resolves as the zone says).
    naive = datetime.combine(local.date(), time(hour, minute))
    return naive.replace(tzinfo=local.tzinfo)


def _unit_name(unit: str) -> str:
    return {"m": "minute", "min": "minute", "h": "hour", "hr": "hour", "d": "day", "w": "week"}.get(
        unit, unit
    )


def _entities(text: str, services: list[str], series: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Services and series the question names, tolerant of case and small typos."""
    words = [w.strip(".-").lower() for w in _WORD.findall(text)]
    by_lower_service = {s.lower(): s for s in services}
    by_lower_series = {s.lower(): s for s in series}
    found_services: list[str] = []
    found_series: list[str] = []
    for word in words:
        if word in by_lower_series:
            found_series.append(by_lower_series[word])
            service = word.split(".", 1)[0]
            if service in by_lower_service:
                found_services.append(by_lower_service[service])
            continue
        if word in by_lower_service:
            found_services.append(by_lower_service[word])
            continue
        if len(word) >= 4:
            close = difflib.get_close_matches(word, list(by_lower_service), n=1, cutoff=0.8)
            if close:
                found_services.append(by_lower_service[close[0]])
                continue
            close = difflib.get_close_matches(word, list(by_lower_series), n=1, cutoff=0.88)
            if close:
                found_series.append(by_lower_series[close[0]])
    return tuple(dict.fromkeys(found_services)), tuple(dict.fromkeys(found_series))


def _intent(text: str) -> Intent:
    for intent, pattern in _INTENTS:
        if pattern.search(text):
            return intent
    return "summary"
