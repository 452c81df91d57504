"""The notification pipeline with a fixed clock on a real SQLite record: what is told, when, and why."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.alerting.alerts import Alert, AlertChange
from engine.alerting.notify import CHANGED, FIRST, NEW_ALERTS, REPEAT, RESOLVED, Dispatcher
from engine.alerting.routing import (
    Destination,
    InhibitRule,
    Timing,
    default_routing,
    load_routing,
    parse_matcher,
)
from engine.alerting.silences import make_silence
from engine.errors import ConfigError
from storage.notify_store import NotifyStore
from storage.sqlite import SqliteRecord

T0 = 1_795_000_000.0
CHAT = Destination("telegram", "100")
TIMING = Timing(group_wait=10, group_interval=60, repeat_interval=3600, critical_skips_wait=True)


def alert(
    name: str, service: str = "checkout", severity: str = "error", started: float = T0, **kw: object
) -> Alert:
    base = Alert(
        id=f"id-{name}-{started:.0f}",
        group_key=f"anomaly:{name}",
        status="firing",
        severity=severity,
        title=f"{name} unusually high",
        series=name,
        service=service,
        source="test",
        started_at=started,
        updated_at=started,
        score=0.9,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class World:
    def __init__(self, record: SqliteRecord, routing_timing: Timing = TIMING) -> None:
        self.record = record
        self.store = NotifyStore(record)
        self.dispatcher = Dispatcher(self.store, default_routing([CHAT], routing_timing), clock=lambda: T0)

    async def put(self, *alerts: Alert, change: str = "opened") -> None:
        async with self.record.transaction() as tx:
            await tx.write_alerts([AlertChange(a, change) for a in alerts])  # type: ignore[arg-type]

    async def tick(self, at: float) -> list[tuple[str, list[str]]]:
        updates = await self.dispatcher.tick(at)
        return [
            (u.notification.reason, sorted(a.series for a in u.notification.alerts))
            for u in updates
            if u.notification
        ]


@pytest.fixture
async def world(tmp_path: Path) -> World:
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    yield World(record)  # type: ignore[misc]
    await record.close()


async def test_group_waits_then_tells_once_with_every_alert(world: World) -> None:
    await world.put(alert("checkout.latency"))
    assert await world.tick(T0) == []  # group_wait holds it
    await world.put(alert("checkout.errors", started=T0 + 3))
    assert await world.tick(T0 + 5) == []
    told = await world.tick(T0 + 10)
    assert told == [(FIRST, ["checkout.errors", "checkout.latency"])]
    assert await world.tick(T0 + 11) == []  # nothing new: nothing said


async def test_critical_skips_the_wait(world: World) -> None:
    await world.put(alert("checkout.down", severity="critical"))
    assert await world.tick(T0) == [(FIRST, ["checkout.down"])]


async def test_alertmanager_alerts_do_not_wait_twice_unless_the_route_says_so(tmp_path: Path) -> None:
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    world = World(record)
    upstream = alert(
        "shop.ShopLatencyHigh", source="alertmanager", group_key="alertmanager:f1", severity="warning"
    )
    assert await world.tick(T0) == []
    await world.put(upstream)
    assert await world.tick(T0 + 1) == [(FIRST, ["shop.ShopLatencyHigh"])]  # no group_wait again
    resolved = replace(upstream, status="resolved", resolved_at=T0 + 5, updated_at=T0 + 5, version=2)
    await world.put(resolved, change="resolved")
    assert await world.tick(T0 + 6) == [(RESOLVED, ["shop.ShopLatencyHigh"])]  # no group_interval
    # SigOps' own anomaly in the same group still waits for company.
    await world.put(alert("shop.latency", service="shop", started=T0 + 7))
    assert await world.tick(T0 + 8) == []
    await record.close()

    waiting = await SqliteRecord.open(tmp_path / "waiting.db")
    world = World(waiting, replace(TIMING, upstream_waits=True))
    await world.put(replace(upstream, id="id-2"))
    assert await world.tick(T0 + 1) == []
    assert await world.tick(T0 + 11) == [(FIRST, ["shop.ShopLatencyHigh"])]
    await waiting.close()


async def test_new_alert_waits_for_group_interval_and_is_named(world: World) -> None:
    await world.put(alert("checkout.latency"))
    await world.tick(T0 + 10)
    await world.put(alert("checkout.errors", started=T0 + 20))
    assert await world.tick(T0 + 30) == []
    assert await world.tick(T0 + 70) == [(NEW_ALERTS, ["checkout.errors", "checkout.latency"])]


async def test_resolution_is_told_and_the_log_keeps_every_reason(world: World) -> None:
    a = alert("checkout.latency")
    await world.put(a)
    await world.tick(T0 + 10)
    await world.put(replace(a, status="resolved", resolved_at=T0 + 50, version=2), change="resolved")
    assert await world.tick(T0 + 80) == [(RESOLVED, ["checkout.latency"])]
    log = await world.store.notification_log(T0)
    assert [reason for _, _, _, reason in reversed(log)] == [FIRST, RESOLVED]


async def test_repeat_interval_reminds_unless_acknowledged(world: World) -> None:
    a = alert("checkout.latency")
    await world.put(a)
    await world.tick(T0 + 10)
    assert await world.tick(T0 + 10 + 3600) == [(REPEAT, ["checkout.latency"])]
    await world.put(replace(a, acked_by="telegram:ana", acked_at=T0 + 3700, version=2), change="updated")
    told = await world.tick(T0 + 3701)
    assert told == [(CHANGED, ["checkout.latency"])]  # people acted: shown at once, no group_interval wait
    assert await world.tick(T0 + 10 + 3 * 3600) == []  # acknowledged: no reminders


async def test_silence_mutes_new_alerts_and_marks_told_ones(world: World) -> None:
    silence = make_silence(['service="payments"'], "1h", "ana", "maintenance", T0)
    await world.store.add_silence(silence)
    await world.put(alert("payments.latency", service="payments"), alert("checkout.latency"))
    told = await world.tick(T0 + 10)
    assert told == [(FIRST, ["checkout.latency"])]  # payments is silenced: never said
    assert (FIRST, ["payments.latency"]) in await world.tick(T0 + 3600 + 20)  # silence over


async def test_inhibition_mutes_lesser_alerts_of_the_same_service(tmp_path: Path) -> None:
    record = await SqliteRecord.open(tmp_path / "x.db")
    world = World(record)
    routing = world.dispatcher.routing
    rule = InhibitRule(
        (parse_matcher('severity="critical"'),), (parse_matcher('severity=~"warning|error"'),), ("service",)
    )
    world.dispatcher.routing = replace(routing, inhibit_rules=(rule,))
    await world.put(
        alert("checkout.down", severity="critical"),
        alert("checkout.latency", severity="warning"),
        alert("search.latency", service="search", severity="warning"),
    )
    told = sorted(await world.tick(T0 + 10))
    assert told == [(FIRST, ["checkout.down"]), (FIRST, ["search.latency"])]
    await record.close()


async def test_flapping_alert_edits_one_message_instead_of_reannouncing(world: World) -> None:
    t = T0
    first = alert("checkout.latency", started=t)
    await world.put(first)
    reasons = [r for r, _ in await world.tick(t + 10)]
    current = first
    for cycle in range(6):  # resolves and comes back six times, two minutes apart
        t += 120
        await world.put(replace(current, status="resolved", resolved_at=t, version=2), change="resolved")
        reasons += [r for r, _ in await world.tick(t + 1)]
        t += 120
        current = alert("checkout.latency", started=t + cycle)
        await world.put(current)
        reasons += [r for r, _ in await world.tick(t + 1)]
    assert reasons.count(FIRST) == 1
    # first, then edits of the same message until it is marked flapping (second return), then quiet
    assert reasons == [FIRST, RESOLVED, CHANGED, RESOLVED, CHANGED]
    groups = await world.store.open_groups()
    assert len(groups) == 1


async def test_routing_file_errors_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "receivers:\n"
        "  - name: oncall\n"
        "    telegram: [100]\n"
        "route:\n"
        "  receiver: oncall\n"
        "  group_wait: soon\n"
        "  routes:\n"
        "    - matchers: ['service=~\"(\"']\n"
        "      receiver: oncall\n"
    )
    with pytest.raises(Exception) as caught:
        load_routing(path)
    message = str(caught.value)
    assert "line 6, route.group_wait" in message and "not a duration" in message
    assert "line 8, route.routes.0.matchers" in message and "bad regular expression" in message


async def test_every_receiver_problem_is_reported_at_once_each_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "receivers:\n"
        "  - name: oncall\n"
        "    telegram: [100]\n"
        "  - name: oncall\n"
        "    slack: [C1]\n"
        "route:\n"
        "  receiver: on-call\n"
        "  routes:\n"
        "    - matchers: ['service=\"db\"']\n"
        "      receiver: dba\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_routing(path)
    lines = str(caught.value).splitlines()[1:]
    assert [line.strip().split(",")[0] for line in lines] == ["line 4", "line 7", "line 10"]
    assert "'oncall' is defined twice" in lines[0]
    assert "no receiver 'on-call' (known: oncall)" in lines[1] and "no receiver 'dba'" in lines[2]


async def test_routing_file_routes_by_matchers_with_default(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "receivers:\n"
        "  - {name: oncall, telegram: [100], slack: ['#ops']}\n"
        "  - {name: payments, slack: ['#payments']}\n"
        "route:\n"
        "  receiver: oncall\n"
        "  group_by: [service, severity]\n"
        "  routes:\n"
        "    - matchers: ['service=\"payments\"']\n"
        "      receiver: payments\n"
        "      group_wait: 0s\n"
    )
    routing, _ = load_routing(path)
    pay = routing.routes_for({"service": "payments", "severity": "error"})
    other = routing.routes_for({"service": "checkout"})
    assert [r.receiver for r in pay] == ["payments"] and pay[0].timing.group_wait == 0
    assert [r.receiver for r in other] == ["oncall"] and other[0].group_by == ("service", "severity")
    assert [str(d) for d in routing.receivers["oncall"].destinations] == ["telegram:100", "slack:#ops"]


async def test_retention_forgets_closed_groups_and_their_history(world: World) -> None:
    a = alert("checkout.latency")
    await world.put(a)
    await world.tick(T0 + 10)
    await world.put(replace(a, status="resolved", resolved_at=T0 + 50, version=2), change="resolved")
    await world.tick(T0 + 80)
    await world.tick(T0 + 80 + 3700)  # quiet for the flap window: the group closes
    assert await world.store.open_groups() == []
    assert await world.store.prune(T0 + 86400) >= 3
    assert await world.store.notification_log(0) == []
    rows = await world.record._rows("SELECT count(*) FROM notify_groups", (), "test")
    assert rows[0][0] == 0


async def test_routing_file_briefs_are_checked_and_become_schedules(tmp_path: Path) -> None:
    from bot.app import brief_schedules
    from bot.settings import Settings

    path = tmp_path / "routing.yaml"
    path.write_text(
        "receivers: [{name: oncall, telegram: [100]}]\n"
        "route: {receiver: oncall}\n"
        "briefs:\n"
        "  - {telegram: [100], at: '8:30', timezone: Europe/Berlin, weekdays_only: true}\n"
        "  - {slack: [C1], at: '25:00', timezone: Mars/Olympus}\n"
    )
    with pytest.raises(Exception) as caught:
        load_routing(path)
    assert "line 5, briefs.1.at: '25:00' is not a time of day" in str(caught.value)
    assert "line 5, briefs.1.timezone: unknown time zone 'Mars/Olympus'" in str(caught.value)
    path.write_text(path.read_text().replace("  - {slack: [C1], at: '25:00', timezone: Mars/Olympus}\n", ""))
    routing, _ = load_routing(path)
    [schedule] = brief_schedules(Settings(), routing)
    assert (
        str(schedule.destination),
        schedule.hour,
        schedule.minute,
        str(schedule.tz),
        schedule.weekdays_only,
    ) == ("telegram:100", 8, 30, "Europe/Berlin", True)


async def test_the_final_resolved_message_names_every_alert_of_the_group(world: World) -> None:
    """Three Alertmanager alerts, the third joining later, resolving in two webhooks: the last
    message is 'resolved' with all three (a report had it show two)."""
    a, b, c = (
        alert(f"shop.Node{i}", "shop", "warning", source="alertmanager", group_key=f"alertmanager:f{i}")
        for i in range(3)
    )
    await world.put(a, b)
    assert await world.tick(T0 + 1) == [(FIRST, ["shop.Node0", "shop.Node1"])]
    await world.put(c)
    assert await world.tick(T0 + 2) == [(NEW_ALERTS, ["shop.Node0", "shop.Node1", "shop.Node2"])]
    gone = {
        x.series: replace(x, status="resolved", resolved_at=T0 + 10, updated_at=T0 + 10, version=2)
        for x in (a, b, c)
    }
    await world.put(gone["shop.Node0"], change="resolved")
    assert await world.tick(T0 + 11) == [(CHANGED, ["shop.Node0", "shop.Node1", "shop.Node2"])]
    await world.put(gone["shop.Node1"], gone["shop.Node2"], change="resolved")
    assert await world.tick(T0 + 21) == [(RESOLVED, ["shop.Node0", "shop.Node1", "shop.Node2"])]
