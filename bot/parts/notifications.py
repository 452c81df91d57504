"""Notifications: routing, the chat notifiers, the alert pipeline and delivery, and their charts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo
from functools import partial

import aiohttp

from bot.alert_message import LabelView
from bot.callbacks import CallbackSigner, load_or_create_secret
from bot.console import ConsoleNotifier
from bot.runtime import DispatchSink, Runtime, _host_tag
from bot.settings import Settings
from bot.slack_notify import SlackNotifier, make_client
from bot.telegram_notify import TelegramNotifier, make_bot
from engine.alerting.alerts import Alert, alert_links
from engine.alerting.delivery import ChatNotifier, Deliverer, DeliveryConfig
from engine.alerting.notify import Dispatcher, Leadership, Notification
from engine.alerting.routing import (
    DEFAULT_TIMING,
    Destination,
    Routing,
    Timing,
    default_routing,
    load_routing,
)
from engine.alerting.throttle import SLACK_LIMITS, TELEGRAM_LIMITS, ChatThrottle, Limits
from engine.alerting.watchdog import DeadMansSwitch, check
from engine.chart import ChartMark, render_chart, unit_of, warm_up_charts
from engine.errors import ConfigError, RecordUnavailable
from engine.intake.pull import alert_graph
from engine.supervise import stopped_within
from storage.notify_store import NotifyStore
from storage.record import Record
from storage.redis_lease import RedisLeader

log = logging.getLogger(__name__)


def build_routing(settings: Settings, console: bool, timing: Timing = DEFAULT_TIMING) -> Routing:
    """The routing file's routes, or everything to every configured chat (and the console)."""
    if settings.routing_file is not None:
        routing, _ = load_routing(settings.routing_file)
        return routing
    destinations = [Destination("telegram", str(c)) for c in settings.telegram_chat_ids]
    destinations += [Destination("slack", c) for c in settings.slack_channels]
    if console:
        destinations.append(Destination("console", "console"))
    return default_routing(destinations, timing)


def build_notifiers(
    settings: Settings, signer: CallbackSigner, console: ConsoleNotifier | None
) -> tuple[dict[str, ChatNotifier], list[Callable[[], Awaitable[None]]]]:
    """A notifier per configured platform, and what closes them."""
    notifiers: dict[str, ChatNotifier] = {}
    closers: list[Callable[[], Awaitable[None]]] = []
    if settings.telegram_token:
        bot = make_bot(
            settings.telegram_token.get_secret_value(), settings.telegram_api_url, settings.chat_timeout_s
        )
        notifiers["telegram"] = TelegramNotifier(bot, signer, settings.tz, labels=label_view(settings))
        closers.append(bot.shutdown)
    if settings.slack_bot_token:
        client = make_client(
            settings.slack_bot_token.get_secret_value(), settings.slack_api_url, settings.chat_timeout_s
        )
        notifiers["slack"] = SlackNotifier(client, signer, settings.tz, labels=label_view(settings))
    if console is not None:
        notifiers["console"] = console
    return notifiers, closers


def callback_signer(settings: Settings) -> CallbackSigner:
    if settings.callback_secret is not None:
        return CallbackSigner(settings.callback_secret.get_secret_value().encode())
    return CallbackSigner(load_or_create_secret(settings.data_dir / "callback.key"))


def start_notifications(rt: Runtime, stop: asyncio.Event) -> None:
    """Run the alert pipeline and delivery (in one process of a deployment at a time)."""
    lease = RedisLeader(rt.redis, rt.keys.dispatcher_lease, _host_tag(), rt.settings.lease_ms)
    leader = Leadership(lease)
    supervise = rt.supervisor.spawn
    supervise("dispatcher", lambda: rt.dispatcher.run(stop, rt.settings.dispatch_interval_s, leader), stop)
    supervise("deliverer", lambda: rt.deliverer.run(stop, leader), stop)
    supervise("chart-warm-up", lambda: asyncio.to_thread(warm_up_charts), stop, once=True)
    if rt.settings.watchdog_alertname:
        switch = DeadMansSwitch(rt.settings.watchdog_alertname, rt.settings.watchdog_timeout_s)
        supervise("watchdog", lambda: watch_heartbeat(rt, switch, stop, leader), stop)


async def watch_heartbeat(
    rt: Runtime, switch: DeadMansSwitch, stop: asyncio.Event, leader: Leadership
) -> None:
    """Check the heartbeat a few times per timeout, on the node that dispatches."""
    every = min(60.0, switch.timeout_s / 4)
    while not stop.is_set():
        try:
            if await leader.check() and await check(switch, rt.record, time.time()) is not None:
                rt.dispatcher.wake()
        except RecordUnavailable as exc:
            log.warning("watchdog check skipped: %s", exc)
        await stopped_within(stop, every)


class ChartMaker:
    """Charts for new alert groups, of the lead alert: its own series for SigOps' anomalies; for
    an Alertmanager alert, its rule's expression from Prometheus (with SIGOPS_PROMETHEUS_URL).

    The window is the episode with context to compare: a few times its length before it, at
    least 45 minutes (not the last pixels of a fixed 2 hours)."""

    def __init__(
        self,
        record: Record,
        tz: tzinfo,
        prometheus_url: str | None = None,
        context_min_s: float = 45 * 60,
    ) -> None:
        self.record = record
        self.tz = tz
        self.prometheus_url = prometheus_url
        self.context_min_s = context_min_s

    async def __call__(self, note: Notification) -> bytes | None:
        top = note.top
        now = time.time()
        since = top.started_at - max(self.context_min_s, 3 * (now - top.started_at))
        if not top.detected:
            return await self._rule_chart(top, since, now)
        points = await self.record.series_points(top.series, since)
        if len(points) < 5:
            return None
        anomalies = await self.record.series_anomalies(top.series, since)
        marks = [ChartMark(c.ts, c.phrase) for c in await self.record.changes_since(top.service, since)]
        return await asyncio.to_thread(
            partial(render_chart, top.title, points, anomalies, marks, self.tz, unit=unit_of(top.series),
                    episode_start=top.started_at)
        )  # fmt: skip

    async def _rule_chart(self, top: Alert, since: float, now: float) -> bytes | None:
        source = dict(alert_links(top.labels)).get("source")
        if self.prometheus_url is None or source is None:
            return None  # the README says once that Alertmanager alerts get charts with Prometheus set
        async with aiohttp.ClientSession() as session:
            graph = await alert_graph(session, self.prometheus_url, source, top.labels, since, now)
        if graph is None:
            return None
        return await asyncio.to_thread(
            partial(render_chart, f"{top.title}: {graph.expr}", graph.points, (), (), self.tz,
                    threshold=graph.threshold, band=False, episode_start=top.started_at)
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlertOutputs:
    """Where alerts go: the routing, a notifier per platform it names, and what closes them."""

    signer: CallbackSigner
    routing: Routing
    notifiers: dict[str, ChatNotifier]
    closers: list[Callable[[], Awaitable[None]]]


def build_outputs(settings: Settings, console: ConsoleNotifier | None, timing: Timing) -> AlertOutputs:
    """The routing and its notifiers; a routing that names a platform with no token is refused."""
    signer = callback_signer(settings)
    routing = build_routing(settings, console is not None, timing)
    notifiers, closers = build_notifiers(settings, signer, console)
    unserved = sorted({d.platform for d in routing.destinations} - set(notifiers))
    if unserved:
        raise ConfigError(f"the routing sends alerts to {', '.join(unserved)} but no token is set for it")
    return AlertOutputs(signer, routing, notifiers, closers)


@dataclass(frozen=True, slots=True)
class Notifications:
    """The alert pipeline (dispatcher) and delivery from its outbox, on the record."""

    store: NotifyStore
    deliverer: Deliverer
    dispatcher: Dispatcher
    sink: DispatchSink


def build_notifications(settings: Settings, record: Record, outputs: AlertOutputs) -> Notifications:
    store = NotifyStore(record)
    throttles = {
        "telegram": ChatThrottle(TELEGRAM_LIMITS),
        "slack": ChatThrottle(SLACK_LIMITS),
        "console": ChatThrottle(Limits(0.0, 10_000, 10_000)),
    }
    deliverer = Deliverer(
        store,
        outputs.notifiers,
        throttles,
        time.time,
        charts=ChartMaker(record, settings.tz, settings.prometheus_url),
        config=DeliveryConfig(timeout_s=settings.chat_timeout_s * 3),
    )
    dispatcher = Dispatcher(store, outputs.routing, time.time, on_outbox=deliverer.wake)
    sink = DispatchSink()
    sink.dispatcher = dispatcher
    return Notifications(store, deliverer, dispatcher, sink)


def label_view(settings: Settings) -> LabelView:
    return LabelView(frozenset(settings.alert_labels_hidden), tuple(settings.alert_labels_first))
