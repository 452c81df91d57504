"""The alert notification pipeline, modelled on Alertmanager's `notify` package.

At each tick the dispatcher routes every live alert to its receivers' groups, then
passes each group through small stages with one signature,
`(TickView, GroupBatch) -> GroupBatch | None` (None: nothing to send now):

    silence → inhibit → damp flapping → dedup (why tell?) → wait (when?)

`build_pipeline` wires them; reading it shows the whole pipeline. A group that comes
out the other end becomes one `Notification` per destination in the outbox, written
together with the group's notification log in one transaction (`Dispatcher.tick`).
Time comes in as `TickView.now`: tests use a fixed clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import orjson

from engine import metrics
from engine.alerting.alerts import UPSTREAM_SOURCES, Alert
from engine.alerting.routing import (
    Destination,
    InhibitRule,
    Receiver,
    Route,
    Routing,
    alert_labels,
    matches_all,
)
from engine.alerting.silences import Silence
from engine.errors import QueueUnavailable, RecordUnavailable
from engine.failpoints import crash_point
from engine.signal import SEVERITY_RANK

log = logging.getLogger(__name__)

FIRST = "first notification"
NEW_ALERTS = "new alerts in group"
CHANGED = "changed state"
REPEAT = "repeat interval elapsed"
RESOLVED = "resolved"

FLAP_TOGGLES = 2  # a member that resolved and came back this many times is flapping
FLAP_WINDOW_S = 3600.0
KEEP_RESOLVED_S = 3600.0  # a resolved member stays in its group's message this long


@dataclass(frozen=True, slots=True)
class Member:
    """What the group's last notification said about one of its alerts (by alert group key)."""

    alert_id: str
    fingerprint: str
    toggles: int = 0
    last_toggle: float = 0.0


@dataclass(frozen=True, slots=True)
class GroupState:
    """The notification log of one alert group: what was last told, and when."""

    id: str
    key: str
    receiver: str
    labels: Mapping[str, str]
    first_seen: float
    last_sent: float | None
    members: Mapping[str, Member]
    version: int


@dataclass(slots=True)
class GroupBatch:
    """One group as it passes the stages: its alerts now, and what the stages found."""

    key: str
    route: Route
    receiver: Receiver
    labels: dict[str, str]
    state: GroupState | None
    alerts: list[Alert]
    silenced_until: dict[str, float] = field(default_factory=dict)  # alert id → end of its silence
    inhibited: set[str] = field(default_factory=set)
    flapping: set[str] = field(default_factory=set)  # alert group keys
    # Resolved alerts no notification has taken up yet (opened and closed between two ticks,
    # or in one worker batch): still news, as "fired and resolved".
    untold: set[str] = field(default_factory=set)
    merged: set[str] = field(default_factory=set)  # older alerts of a series a newer one stands for
    toggles: dict[str, tuple[int, float]] = field(default_factory=dict)
    reason: str | None = None
    news: set[str] = field(default_factory=set)  # ids of the alerts that are new to the group
    triggers: list[Alert] = field(default_factory=list)  # the alerts whose news this version is
    urgent: bool = False  # people acted, or a critical alert arrived: skip the wait
    _index: dict[str, int] = field(default_factory=dict)

    def add(self, alert: Alert) -> None:
        """Add an alert; of two for the same series (resolved, then back), the newer stands."""
        at = self._index.get(alert.group_key)
        if at is None:
            self._index[alert.group_key] = len(self.alerts)
            self.alerts.append(alert)
        elif alert.started_at >= self.alerts[at].started_at:
            self.merged.add(self.alerts[at].id)
            self.alerts[at] = alert
        else:
            self.merged.add(alert.id)

    def mutable(self, alert: Alert) -> bool:
        """Whether silences and inhibition apply: firing alerts, and resolved ones not yet told."""
        return alert.status != "resolved" or alert.id in self.untold

    def muted(self, alert: Alert) -> bool:
        return alert.id in self.silenced_until or alert.id in self.inhibited

    @property
    def told(self) -> Mapping[str, Member]:
        return self.state.members if self.state else {}

    def visible(self) -> list[Alert]:
        """Alerts the message shows: unmuted firing or untold ones, and those it already told about."""
        return [a for a in self.alerts if self.shows(a)]

    def shows(self, alert: Alert) -> bool:
        if alert.id in self.untold:
            return not self.muted(alert)
        return alert.group_key in self.told or (alert.status != "resolved" and not self.muted(alert))


@dataclass(frozen=True, slots=True)
class TickView:
    """What every stage may look at during one tick."""

    now: float
    silences: Sequence[Silence]
    firing: Sequence[Alert]
    inhibit_rules: Sequence[InhibitRule]


Stage = Callable[[TickView, GroupBatch], "GroupBatch | None"]


@dataclass(frozen=True, slots=True)
class Notification:
    """What one destination is told about one group: the snapshot the renderers draw."""

    group_id: str
    version: int
    reason: str
    receiver: str
    group_labels: Mapping[str, str]
    alerts: tuple[Alert, ...]
    silenced_until: Mapping[str, float]
    inhibited: frozenset[str]
    flapping: frozenset[str]
    created_at: float
    news: frozenset[str] = frozenset()  # the alerts this version is about (new in the group)

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status != "resolved"]

    @property
    def resolved(self) -> bool:
        return not self.firing

    @property
    def top(self) -> Alert:
        """The alert the message leads with: the worst firing one, else the latest."""
        pool = self.firing or list(self.alerts)
        return max(pool, key=lambda a: (SEVERITY_RANK[a.severity], a.risk, a.score, a.updated_at))

    @property
    def title(self) -> str:
        scope = ", ".join(f"{v}" for v in self.group_labels.values()) or "all"
        return f"{scope}: {self.top.title}" if len(self.alerts) > 1 else self.top.title

    def to_json(self) -> bytes:
        data = asdict(self)
        data["inhibited"] = sorted(self.inhibited)
        data["flapping"] = sorted(self.flapping)
        data["news"] = sorted(self.news)
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Notification:
        data: dict[str, Any] = orjson.loads(raw)
        data["alerts"] = tuple(Alert(**a) for a in data["alerts"])
        data["inhibited"] = frozenset(data["inhibited"])
        data["flapping"] = frozenset(data["flapping"])
        data["news"] = frozenset(data.get("news", ()))  # absent in rows written before it existed
        return cls(**data)


# ---- stages -------------------------------------------------------------------------


def silence(view: TickView, batch: GroupBatch) -> GroupBatch | None:
    """Mark firing alerts an active silence covers (they stay in a message that told of them)."""
    for alert in batch.alerts:
        if not batch.mutable(alert):
            continue
        labels = alert_labels(alert)
        ends = [s.ends_at for s in view.silences if s.mutes(labels, view.now)]
        if ends:
            batch.silenced_until[alert.id] = max(ends)
    return batch


def inhibit(view: TickView, batch: GroupBatch) -> GroupBatch | None:
    """Mute alerts that a firing alert of an inhibit rule's source side covers."""
    if not view.inhibit_rules:
        return batch
    for alert in batch.alerts:
        if not batch.mutable(alert):
            continue
        labels = alert_labels(alert)
        for rule in view.inhibit_rules:
            if not matches_all(rule.target, labels):
                continue
            if any(_inhibits(rule, source, alert, labels) for source in view.firing):
                batch.inhibited.add(alert.id)
                break
    return batch


def _inhibits(rule: InhibitRule, source: Alert, target: Alert, target_labels: Mapping[str, str]) -> bool:
    if source.id == target.id:
        return False
    source_labels = alert_labels(source)
    if not matches_all(rule.source, source_labels) or matches_all(rule.target, source_labels):
        return False  # an alert on both sides would mute itself and its peers
    return all(source_labels.get(n, "") == target_labels.get(n, "") for n in rule.equal)


def damp_flapping(view: TickView, batch: GroupBatch) -> GroupBatch | None:
    """Count how often each member came back after resolving; a toggling one is shown as flapping."""
    for alert in batch.alerts:
        member = batch.told.get(alert.group_key)
        toggles, last = (member.toggles, member.last_toggle) if member else (0, 0.0)
        if member is not None and member.alert_id != alert.id and alert.status != "resolved":
            recent = view.now - last < FLAP_WINDOW_S
            toggles, last = (toggles + 1 if recent or toggles == 0 else 1), view.now
        batch.toggles[alert.group_key] = (toggles, last)
        if alert.flapping or (toggles >= FLAP_TOGGLES and view.now - last < FLAP_WINDOW_S):
            batch.flapping.add(alert.group_key)
    return batch


def dedup(view: TickView, batch: GroupBatch) -> GroupBatch | None:
    """Decide whether this group is worth telling about now, and why (None: it is not)."""
    visible = batch.visible()
    firing = [a for a in visible if a.status != "resolved"]
    loud = [a for a in firing if not batch.muted(a)]
    loud += [a for a in visible if a.id in batch.untold]  # unmuted by `visible`
    if batch.state is None or batch.state.last_sent is None:
        if not loud:
            return None
        batch.reason = FIRST
        batch.news = {a.id for a in loud}
        batch.triggers = loud
        batch.urgent = any(a.severity == "critical" for a in loud) and batch.route.timing.critical_skips_wait
        return batch
    told = batch.told
    now_prints = {a.group_key: fingerprint(a, batch) for a in visible}
    new = [a for a in loud if a.group_key not in told]
    changed = [k for k, fp in now_prints.items() if k in told and told[k].fingerprint != fp]
    if new:
        batch.reason = NEW_ALERTS
        batch.news = {a.id for a in new}
        batch.triggers = new
        batch.urgent = batch.route.timing.critical_skips_wait and any(a.severity == "critical" for a in new)
    elif changed:
        batch.reason = CHANGED if firing else RESOLVED
        batch.triggers = [a for a in visible if a.group_key in changed]
        batch.urgent = any(_people_changed(told[k].fingerprint, now_prints[k]) for k in changed)
    elif _reminder_due(view.now, batch, loud):
        batch.reason = REPEAT
    else:
        return None
    return batch


def wait(view: TickView, batch: GroupBatch) -> GroupBatch | None:
    """Hold a group for group_wait (first time) or group_interval (changes) unless it is urgent."""
    timing = batch.route.timing
    if batch.urgent or batch.reason == REPEAT:
        return batch
    if (
        not timing.upstream_waits
        and batch.triggers
        and all(a.source in UPSTREAM_SOURCES for a in batch.triggers)
    ):
        return batch  # Alertmanager/Grafana already waited: do not make people wait twice
    if batch.state is None or batch.state.last_sent is None:
        first_seen = batch.state.first_seen if batch.state else _new_state(batch, view.now).first_seen
        return batch if view.now >= first_seen + timing.group_wait else None
    return batch if view.now >= batch.state.last_sent + timing.group_interval else None


def build_pipeline() -> list[Stage]:
    """The stages every group passes, in order."""
    return [silence, inhibit, damp_flapping, dedup, wait]


def run_stages(stages: Sequence[Stage], view: TickView, batch: GroupBatch) -> GroupBatch | None:
    current: GroupBatch | None = batch
    for stage in stages:
        if current is None:
            return None
        current = stage(view, current)
    return current


# ---- fingerprints: what counts as a change ------------------------------------------------


def fingerprint(alert: Alert, batch: GroupBatch) -> str:
    """The parts of an alert whose change is news. A flapping alert's ups and downs are not."""
    flapping = alert.group_key in batch.flapping
    status = "flapping" if flapping else alert.status
    ident = alert.group_key if flapping else alert.id
    people = f"{alert.acked_by or ''}|{alert.resolved_by or ''}|{batch.silenced_until.get(alert.id, 0):.0f}"
    return f"{ident}|{status}|{alert.severity}|{int(alert.id in batch.inhibited)}#{people}"


def _people_changed(before: str, after: str) -> bool:
    return before.partition("#")[2] != after.partition("#")[2]


def _reminder_due(now: float, batch: GroupBatch, loud: Sequence[Alert]) -> bool:
    assert batch.state is not None and batch.state.last_sent is not None
    waiting = [a for a in loud if a.status != "resolved" and not a.acked_by and (a.snoozed_until or 0) <= now]
    return bool(waiting) and now >= batch.state.last_sent + batch.route.timing.repeat_interval


# ---- the dispatcher -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupUpdate:
    """The new notification log entry of a group, and the outbox rows to write with it."""

    state: GroupState
    closed: bool
    notification: Notification | None
    destinations: tuple[Destination, ...]
    settled: tuple[str, ...] = ()  # untold resolved alerts nobody will be told of (muted)

    def taken_up(self) -> set[str]:
        """Alerts this update deals with for good: the ones it tells of, and the settled ones."""
        told = {a.id for a in self.notification.alerts} if self.notification else set()
        return told | set(self.settled)


class NotifyStore(Protocol):
    """What the dispatcher reads and writes (SQLite in production)."""

    async def live_alerts(self, extra_ids: Sequence[str]) -> list[Alert]:
        """Every unresolved alert, plus these alerts whatever their state."""
        ...

    async def open_groups(self) -> list[GroupState]: ...

    async def active_silences(self, now: float) -> list[Silence]: ...

    async def write_groups(self, updates: Sequence[GroupUpdate], now: float) -> None:
        """Save group states, the notification log and outbox rows in one transaction."""
        ...


class Lease(Protocol):
    async def lead(self) -> bool:
        """True while this process holds the lease (taking or renewing it)."""
        ...


class Leadership:
    """Whether this process runs the pipeline: one process at a time across a deployment."""

    def __init__(self, lease: Lease | None) -> None:
        self.lease = lease
        self._leading = lease is None

    async def check(self) -> bool:
        if self.lease is None:
            return True
        try:
            leading = await self.lease.lead()
        except QueueUnavailable:
            return self._leading  # a Redis blip: keep the last answer rather than stop delivering
        if leading != self._leading:
            log.info("alert dispatch: %s", "this process leads" if leading else "another process leads")
        self._leading = leading
        return leading


class Dispatcher:
    """Runs the pipeline over all live alerts at each tick and fills the outbox."""

    def __init__(
        self,
        store: NotifyStore,
        routing: Routing,
        clock: Callable[[], float],
        stages: Sequence[Stage] | None = None,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.routing = routing
        self.clock = clock
        self.stages = list(stages or build_pipeline())
        self.on_outbox = on_outbox
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask for a tick now (a worker committed alert changes)."""
        self._wake.set()

    async def run(
        self, stop: asyncio.Event, interval_s: float = 1.0, leader: Leadership | None = None
    ) -> None:
        while not stop.is_set():
            try:
                if leader is None or await leader.check():
                    await self.tick(self.clock())
            except RecordUnavailable as exc:
                log.warning("alert dispatch skipped a tick: %s", exc)
            self._wake.clear()
            stopper = asyncio.ensure_future(stop.wait())
            waker = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({stopper, waker}, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            waker.cancel()

    async def tick(self, now: float) -> list[GroupUpdate]:
        """One pass: route, group, run the stages, write what is to be sent; return the updates."""
        with metrics.DISPATCH_TICK_SECONDS.time():
            return await self._tick(now)

    async def _tick(self, now: float) -> list[GroupUpdate]:
        groups = {g.key: g for g in await self.store.open_groups()}
        told_ids = [m.alert_id for g in groups.values() for m in g.members.values()]
        alerts = await self.store.live_alerts(told_ids)
        firing = [a for a in alerts if a.status != "resolved"]
        view = TickView(now, await self.store.active_silences(now), firing, self.routing.inhibit_rules)
        batches = self._group(alerts, groups, now)
        updates = [u for b in batches.values() if (u := self._process_safely(view, b)) is not None]
        if updates:
            await self.store.write_groups(updates, now)
            crash_point("dispatch:after-outbox")
            if self.on_outbox and any(u.notification for u in updates):
                self.on_outbox()
        return updates

    def _group(
        self, alerts: Iterable[Alert], groups: Mapping[str, GroupState], now: float
    ) -> dict[str, GroupBatch]:
        told_by_id = {m.alert_id: g.key for g in groups.values() for m in g.members.values()}
        batches: dict[str, GroupBatch] = {}
        for alert in alerts:
            labels = alert_labels(alert)
            told_key = told_by_id.get(alert.id)
            if alert.status == "resolved" and told_key:  # news to the group that was told it fired
                route = self._route_of(told_key)
                placed = [(route, told_key)] if route else []
            else:  # firing, or resolved before any notification took it up
                placed = [(r, group_key(r, labels)) for r in self.routing.routes_for(labels)]
            for route, key in placed:
                batch = batches.get(key)
                if batch is None:
                    group_labels = {n: labels.get(n, "") for n in route.group_by}
                    batch = GroupBatch(
                        key, route, self.routing.receivers[route.receiver], group_labels, groups.get(key), []
                    )
                    batches[key] = batch
                batch.add(alert)
                if alert.status == "resolved" and not told_key:
                    batch.untold.add(alert.id)
        # Groups whose alerts are all gone from the live set still need closing.
        for key, state in groups.items():
            if key not in batches and (route := self._route_of(key)) is not None:
                batches[key] = GroupBatch(
                    key, route, self.routing.receivers[route.receiver], dict(state.labels), state, []
                )
        return batches

    def _route_of(self, key: str) -> Route | None:
        path = key.split("|", 1)[0]
        return _find_route(self.routing.root, path)

    def _process_safely(self, view: TickView, batch: GroupBatch) -> GroupUpdate | None:
        """One group's update; a bug that one group's alerts trigger does not hold back the others."""
        try:
            return self._process(view, batch)
        except Exception:
            log.exception("alert group %s skipped this tick: unexpected error", batch.key)
            return None

    def _process(self, view: TickView, batch: GroupBatch) -> GroupUpdate | None:
        out = run_stages(self.stages, view, batch)
        update = self._outcome(view, batch, out)
        # Untold resolved alerts that stay muted, or that a newer alert of their series stands
        # for in the message that goes out: stop reading them.
        settled = tuple(a.id for a in batch.alerts if a.id in batch.untold and not batch.shows(a))
        if update is not None and update.notification is not None:
            settled += tuple(sorted(batch.merged & batch.untold))
        if not settled:
            return update
        if update is not None:
            return replace(update, settled=settled)
        return GroupUpdate(batch.state or _new_state(batch, view.now), batch.state is None, None, (), settled)

    def _outcome(self, view: TickView, batch: GroupBatch, out: GroupBatch | None) -> GroupUpdate | None:
        state = batch.state
        if out is None:
            if state is None:
                if not batch.visible():
                    return None
                # Seen for the first time but held by group_wait: remember when it was first seen.
                return GroupUpdate(_new_state(batch, view.now), False, None, ())
            if not batch.visible() and state.last_sent is None:
                return GroupUpdate(state, True, None, ())  # never told, and nothing left to tell
            quiet = state.last_sent is not None and view.now - state.last_sent >= FLAP_WINDOW_S
            if quiet and not any(a.status != "resolved" for a in batch.alerts):
                return GroupUpdate(state, True, None, ())  # resolved and stayed so: the next one is news
            return None
        base = state or _new_state(batch, view.now)
        visible = out.visible()
        members = {
            a.group_key: Member(a.id, fingerprint(a, out), *out.toggles.get(a.group_key, (0, 0.0)))
            for a in visible
            if a.status != "resolved" or view.now - (a.resolved_at or view.now) < KEEP_RESOLVED_S
        }
        note = Notification(
            group_id=base.id,
            version=base.version + 1,
            reason=out.reason or CHANGED,
            receiver=out.receiver.name,
            group_labels=out.labels,
            alerts=tuple(sorted(visible, key=_display_order)),
            silenced_until={a.id: out.silenced_until[a.id] for a in visible if a.id in out.silenced_until},
            inhibited=frozenset(a.id for a in visible if a.id in out.inhibited),
            flapping=frozenset(a.id for a in visible if a.group_key in out.flapping),
            created_at=view.now,
            news=frozenset(a.id for a in visible if a.id in out.news),
        )
        new_state = replace(base, last_sent=view.now, members=members, version=note.version)
        log.info("alert group %s v%d: %s (%d alerts)", base.key, note.version, note.reason, len(visible))
        # A resolved group stays open a while, so an alert that comes back edits the same message.
        return GroupUpdate(new_state, False, note, out.receiver.destinations)


def group_key(route: Route, labels: Mapping[str, str]) -> str:
    values = ",".join(f"{n}={labels.get(n, '')}" for n in route.group_by)
    return f"{route.path}|{route.receiver}|{values}"


def _new_state(batch: GroupBatch, now: float) -> GroupState:
    # The group began when its first alert did (a dispatcher that was down does not wait again).
    began = min([now, *(a.started_at for a in batch.alerts)])
    digest = hashlib.blake2b(f"{batch.key}@{now:.6f}".encode(), digest_size=5).hexdigest()
    return GroupState(digest, batch.key, batch.receiver.name, batch.labels, began, None, {}, 0)


def _find_route(route: Route, path: str) -> Route | None:
    if route.path == path:
        return route
    for child in route.children:
        if path.startswith(child.path) and (found := _find_route(child, path)) is not None:
            return found
    return None


def _display_order(alert: Alert) -> tuple[int, int, float]:
    return (int(alert.status == "resolved"), -SEVERITY_RANK[alert.severity], -alert.risk)
