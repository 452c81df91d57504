"""Where alerts go: label matchers, a tree of routes to receivers, inhibition rules.

Configured in a YAML file shaped like Alertmanager's (`receivers`, `route`,
`inhibit_rules`); `load_routing` validates it once at start and names the line and
field of every problem. Without a file, `default_routing` sends everything to every
configured chat.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.alerting.alerts import Alert
from engine.errors import ConfigError
from engine.text import parse_duration

Op = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$')


@dataclass(frozen=True, slots=True)
class Matcher:
    """`name op value`, as in Alertmanager: `service="payments"`, `severity=~"error|critical"`."""

    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    """One matcher from its text; ValueError naming what is wrong."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError(
            f'{text!r} is not a matcher (use e.g. service="payments" or severity=~"error|critical")'
        )
    name, op, quoted, bare = found.groups()
    value = bytes(quoted, "utf-8").decode("unicode_escape") if quoted is not None else bare
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: bad regular expression: {exc}") from exc
    return Matcher(name, op, value, pattern)  # type: ignore[arg-type]


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels routing, silences and inhibition match on: the alert's own plus its identity."""
    labels = dict(alert.labels)
    labels.setdefault("alertname", alert.title)
    labels.update(series=alert.series, service=alert.service, severity=alert.severity, source=alert.source)
    return labels


@dataclass(frozen=True, slots=True)
class Destination:
    """One chat: a Telegram chat id or a Slack channel (or the console)."""

    platform: Literal["telegram", "slack", "console"]
    chat: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.chat}"


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    destinations: tuple[Destination, ...]


@dataclass(frozen=True, slots=True)
class Timing:
    group_wait: float
    group_interval: float
    repeat_interval: float
    critical_skips_wait: bool
    # Alertmanager and Grafana already waited and grouped before they sent an alert: by default
    # their alerts (and resolves) go out at once instead of waiting group_wait/group_interval again.
    upstream_waits: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """A node of the routing tree; children are tried first, in order."""

    path: str  # "root", "root.0", "root.0.1": names the route in logs and group keys
    matchers: tuple[Matcher, ...]
    receiver: str
    group_by: tuple[str, ...]
    timing: Timing
    keep_going: bool  # Alertmanager's `continue`
    children: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """While a `source` alert fires, `target` alerts with the same `equal` labels are muted."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BriefSpec:
    """Briefs for some destinations: a local time, a zone (None: SIGOPS_TIMEZONE), weekdays only or not."""

    destinations: tuple[Destination, ...]
    at: str
    timezone: str | None
    weekdays_only: bool


@dataclass(frozen=True, slots=True)
class Routing:
    receivers: Mapping[str, Receiver]
    root: Route
    inhibit_rules: tuple[InhibitRule, ...]
    briefs: tuple[BriefSpec, ...] | None = None  # None: every destination, at the default time

    def routes_for(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert with these labels goes to (the root when no child matches)."""
        return _match(self.root, labels) or [self.root]

    @property
    def destinations(self) -> list[Destination]:
        seen = {d: None for r in self.receivers.values() for d in r.destinations}
        return list(seen)


def _match(route: Route, labels: Mapping[str, str]) -> list[Route]:
    if not matches_all(route.matchers, labels):
        return []
    found: list[Route] = []
    for child in route.children:
        matched = _match(child, labels)
        found += matched
        if matched and not child.keep_going:
            break
    return found or [route]


DEFAULT_TIMING = Timing(group_wait=10, group_interval=60, repeat_interval=4 * 3600, critical_skips_wait=True)
DEFAULT_GROUP_BY = ("service",)


def default_routing(destinations: Sequence[Destination], timing: Timing = DEFAULT_TIMING) -> Routing:
    """Everything to every configured chat, grouped by service."""
    receiver = Receiver("default", tuple(destinations))
    root = Route("root", (), "default", DEFAULT_GROUP_BY, timing, False, ())
    return Routing({"default": receiver}, root, ())


# ---- the YAML file ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _ReceiverFile(_Strict):
    name: str = Field(min_length=1)
    telegram: list[int | str] = Field(default_factory=list)
    slack: list[str] = Field(default_factory=list)
    console: bool = False


class _RouteFile(_Strict):
    receiver: str | None = None
    matchers: list[str] = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None
    critical_skips_wait: bool | None = None
    upstream_waits: bool | None = None
    keep_going: bool = Field(False, alias="continue")
    routes: list[_RouteFile] = Field(default_factory=list)

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_matcher(value)
        return values

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(str(value))
        return value


class _InhibitFile(_Strict):
    source_matchers: list[str] = Field(min_length=1)
    target_matchers: list[str] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_matcher(value)
        return values


class _BriefFile(_Strict):
    telegram: list[int | str] = Field(default_factory=list)
    slack: list[str] = Field(default_factory=list)
    at: str = "08:00"
    timezone: str | None = None
    weekdays_only: bool = False

    @field_validator("at")
    @classmethod
    def _time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"{value!r} is not a time of day (use HH:MM, e.g. 08:00)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
                ) from None
        return value


class RoutingFile(_Strict):
    receivers: list[_ReceiverFile] = Field(min_length=1)
    route: _RouteFile
    inhibit_rules: list[_InhibitFile] = Field(default_factory=list)
    briefs: list[_BriefFile] | None = None


def load_routing(path: Path) -> tuple[Routing, RoutingFile]:
    """Read and check the routing file; ConfigError naming the line and field of each problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"routing file {path}: cannot read it: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"routing file {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"routing file {path}: expected a mapping with receivers and route")
    try:
        parsed = RoutingFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            line = _line_of(tree, error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"line {line}, {where}: {message}")
        raise ConfigError(f"routing file {path}:\n  " + "\n  ".join(problems)) from exc
    problems = _receiver_problems(parsed, tree)
    if problems:
        raise ConfigError(f"routing file {path}:\n  " + "\n  ".join(problems))
    return _build(parsed, path), parsed


def _receiver_problems(parsed: RoutingFile, tree: yaml.Node | None) -> list[str]:
    """Every route whose receiver (its own or inherited) is missing or unknown, each with its line."""
    names = [r.name for r in parsed.receivers]
    known = ", ".join(dict.fromkeys(names)) or "none"
    problems = []
    for index, name in enumerate(names):
        if names.index(name) != index:
            loc = ("receivers", index, "name")
            problems.append(f"line {_line_of(tree, loc)}, receivers.{index}.name: {name!r} is defined twice")

    def walk(node: _RouteFile, loc: tuple[int | str, ...], inherited: str | None) -> None:
        receiver = node.receiver or inherited
        where = ".".join(map(str, loc))
        if receiver is None:
            problems.append(f"line {_line_of(tree, loc)}, {where}.receiver: the top route needs a receiver")
        elif receiver not in names:
            line = _line_of(tree, (*loc, "receiver"))
            problems.append(f"line {line}, {where}.receiver: no receiver {receiver!r} (known: {known})")
        for i, child in enumerate(node.routes):
            walk(child, (*loc, "routes", i), receiver)

    walk(parsed.route, ("route",), None)
    return problems


def _build(parsed: RoutingFile, path: Path) -> Routing:
    receivers: dict[str, Receiver] = {}
    for r in parsed.receivers:
        destinations = [Destination("telegram", str(c)) for c in r.telegram]
        destinations += [Destination("slack", c) for c in r.slack]
        if r.console:
            destinations.append(Destination("console", "console"))
        receivers[r.name] = Receiver(r.name, tuple(destinations))
    if parsed.route.receiver is None:
        raise ConfigError(f"routing file {path}: route.receiver: the top route needs a receiver")

    def build(node: _RouteFile, where: str, parent: Route | None) -> Route:
        receiver = node.receiver or (parent.receiver if parent else "")
        if receiver not in receivers:
            known = ", ".join(receivers)
            raise ConfigError(
                f"routing file {path}: {where}.receiver: no receiver {receiver!r} (known: {known})"
            )
        inherited = parent.timing if parent else DEFAULT_TIMING
        timing = Timing(
            parse_duration(node.group_wait) if node.group_wait else inherited.group_wait,
            parse_duration(node.group_interval) if node.group_interval else inherited.group_interval,
            parse_duration(node.repeat_interval) if node.repeat_interval else inherited.repeat_interval,
            inherited.critical_skips_wait if node.critical_skips_wait is None else node.critical_skips_wait,
            inherited.upstream_waits if node.upstream_waits is None else node.upstream_waits,
        )
        group_by = (
            tuple(node.group_by)
            if node.group_by is not None
            else (parent.group_by if parent else DEFAULT_GROUP_BY)
        )
        route = Route(
            where, tuple(map(parse_matcher, node.matchers)), receiver, group_by, timing, node.keep_going, ()
        )
        children = tuple(build(child, f"{where}.routes.{i}", route) for i, child in enumerate(node.routes))
        return Route(route.path, route.matchers, receiver, group_by, timing, node.keep_going, children)

    root = build(parsed.route, "route", None)
    rules = tuple(
        InhibitRule(
            tuple(map(parse_matcher, r.source_matchers)),
            tuple(map(parse_matcher, r.target_matchers)),
            tuple(r.equal),
        )
        for r in parsed.inhibit_rules
    )
    briefs = None
    if parsed.briefs is not None:
        briefs = tuple(
            BriefSpec(
                tuple(
                    [Destination("telegram", str(c)) for c in b.telegram]
                    + [Destination("slack", c) for c in b.slack]
                ),
                b.at,
                b.timezone,
                b.weekdays_only,
            )
            for b in parsed.briefs
        )
    return Routing(receivers, root, rules, briefs)


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """The 1-based line of the YAML node at `loc` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
