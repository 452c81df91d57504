"""The composition root: builds the concrete stores and hands them to the engine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError

from bot.access import Access
from bot.callbacks import CallbackSigner, load_or_create_secret
from bot.commands import CommandCore, compose_brief
from bot.console import ConsoleNotifier
from bot.http import build_app
from bot.reply import Reply
from bot.settings import Settings
from bot.slack_app import SlackFrontEnd
from bot.slack_notify import SlackNotifier, make_client
from bot.telegram_bot import TelegramFrontEnd
from bot.telegram_notify import TelegramNotifier, make_bot
from engine.alerting.actions import AlertActions
from engine.alerting.alerts import Alert, AlertPolicy
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
from engine.answers.answer import RetrievalAnswerer
from engine.answers.embed import Embedder, HashingEmbedder
from engine.answers.narrate import ModelAnswerer
from engine.answers.retrieval import Indexer, Retriever
from engine.brief.schedule import BriefSchedule, BriefScheduler, parse_schedule
from engine.chart import ChartMark, render_chart, warm_up_charts
from engine.detection.detect import Detection, Hysteresis
from engine.detection.ensemble import EnsembleDetector, LocalHours
from engine.errors import ConfigError, DeliveryFailed, QueueUnavailable, RecordUnavailable
from engine.intake.ingest import Ingest
from engine.intake.ownership import Ownership
from engine.intake.pull import Probe, ProbeSource, PrometheusSource, PromQuery
from engine.intake.worker import SignalProcessor, Worker, WorkerConfig
from engine.signal import Signal
from engine.supervise import Supervisor
from storage.documents import SqliteDocumentStore
from storage.keys import Keys
from storage.notify_store import SqliteNotifyStore
from storage.ollama_model import OllamaEmbedder, OllamaModel
from storage.redis_brief import RedisBriefLedger
from storage.redis_lease import RedisLeader, RedisShardLeases
from storage.redis_state import RedisCursorStore, RedisDetectorStateStore
from storage.redis_stream import RedisSignalQueue, connect
from storage.sqlite import SqliteRecord
from storage.vector_index import FaissIndex

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a running SigOps process is made of."""

    settings: Settings
    redis: aioredis.Redis
    embedded: bool
    keys: Keys
    queue: RedisSignalQueue
    record: SqliteRecord
    processor: SignalProcessor
    ingest: Ingest
    core: CommandCore
    sink: DispatchSink
    notify_store: SqliteNotifyStore
    dispatcher: Dispatcher
    deliverer: Deliverer
    supervisor: Supervisor
    access: Access = field(default_factory=lambda: Access({}))
    signer: CallbackSigner | None = None
    telegram: TelegramFrontEnd | None = None
    slack: SlackFrontEnd | None = None
    routes: list[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = field(
        default_factory=list
    )
    runner: web.AppRunner | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return self.supervisor.tasks

    async def close(self) -> None:
        for close in self.closers:
            await close()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.record.close()
        await self.redis.aclose()


def build_detection(settings: Settings) -> Detection:
    """The detector ensemble and hysteresis as configured (shared by `serve` and `detect`)."""
    return Detection(
        EnsembleDetector(warmup=settings.detect_warmup, hours=LocalHours(settings.tz)),
        Hysteresis(
            open_score=settings.detect_open_score,
            keep_score=settings.detect_keep_score,
            quiet_points=settings.detect_quiet_points,
        ),
    )


def make_redis(settings: Settings) -> tuple[aioredis.Redis, bool]:
    """The configured Redis, or an in-process stand-in when none is configured."""
    if settings.redis_url:
        return connect(settings.redis_url), False
    import fakeredis  # only the embedded default needs it

    return fakeredis.FakeAsyncRedis(), True


class DispatchSink:
    """The workers' `AlertSink`: committed alert changes wake the dispatcher at once."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None

    async def notify(self, alert: Alert, change: str) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()


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
        notifiers["telegram"] = TelegramNotifier(bot, signer, settings.tz)
        closers.append(bot.shutdown)
    if settings.slack_bot_token:
        client = make_client(
            settings.slack_bot_token.get_secret_value(), settings.slack_api_url, settings.chat_timeout_s
        )
        notifiers["slack"] = SlackNotifier(client, signer, settings.tz)
    if console is not None:
        notifiers["console"] = console
    return notifiers, closers


def callback_signer(settings: Settings) -> CallbackSigner:
    if settings.callback_secret is not None:
        return CallbackSigner(settings.callback_secret.get_secret_value().encode())
    return CallbackSigner(load_or_create_secret(settings.data_dir / "callback.key"))


async def open_runtime(
    settings: Settings,
    *,
    sqlite_path: Path | None = None,
    console: ConsoleNotifier | None = None,
    timing: Timing = DEFAULT_TIMING,
) -> Runtime:
    """Connect the stores and wire the engine; Redis may still be down (workers wait)."""
    signer = callback_signer(settings)
    routing = build_routing(settings, console is not None, timing)
    embedder = await choose_embedder(settings)
    notifiers, closers = build_notifiers(settings, signer, console)
    unserved = sorted({d.platform for d in routing.destinations} - set(notifiers))
    if unserved:
        raise ConfigError(f"the routing sends alerts to {', '.join(unserved)} but no token is set for it")
    redis, embedded = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    queue = RedisSignalQueue(redis, keys, maxlen=settings.stream_maxlen, shards=settings.shards)
    record = await SqliteRecord.open(sqlite_path or settings.sqlite_path)
    processor = SignalProcessor(
        record,
        RedisDetectorStateStore(redis, keys),
        build_detection(settings),
        AlertPolicy(),
    )
    ingest = Ingest(queue, max_records=settings.max_batch)
    notify_store = SqliteNotifyStore(record)
    deliverer = Deliverer(
        notify_store,
        notifiers,
        {
            "telegram": ChatThrottle(TELEGRAM_LIMITS),
            "slack": ChatThrottle(SLACK_LIMITS),
            "console": ChatThrottle(Limits(0.0, 10_000, 10_000)),
        },
        time.time,
        charts=ChartMaker(record, settings.tz),
        config=DeliveryConfig(timeout_s=settings.chat_timeout_s * 3),
    )
    dispatcher = Dispatcher(notify_store, routing, time.time, on_outbox=deliverer.wake)
    supervisor = Supervisor()
    core = CommandCore(
        record,
        RetrievalAnswerer(record),
        delivery=notify_store,
        actions=AlertActions(notify_store, time.time, wake=dispatcher.wake),
        chart_dir=settings.data_dir / "charts",
        tz=settings.tz,
        narrator=build_narrator(settings, record, embedder),
        supervisor=supervisor,
    )
    sink = DispatchSink()
    sink.dispatcher = dispatcher
    try:
        await queue.ensure_group()
    except QueueUnavailable as exc:
        log.warning("Redis not reachable yet (%s); ingest answers 503 and workers wait until it is", exc)
    rt = Runtime(
        settings,
        redis,
        embedded,
        keys,
        queue,
        record,
        processor,
        ingest,
        core,
        sink,
        notify_store,
        dispatcher,
        deliverer,
        supervisor,
    )
    rt.closers.extend(closers)
    rt.signer = signer
    rt.access = Access(
        {"telegram": {str(c) for c in settings.telegram_chat_ids}, "slack": set(settings.slack_channels)},
        settings.roles,
        settings.default_role,
    )
    telegram = notifiers.get("telegram")
    if isinstance(telegram, TelegramNotifier):
        rt.telegram = TelegramFrontEnd(
            telegram.bot,
            core,
            rt.access,
            signer,
            webhook_url=settings.telegram_webhook_url,
            webhook_secret=settings.telegram_webhook_secret.get_secret_value()
            if settings.telegram_webhook_secret
            else None,
            poll_interval_s=settings.telegram_poll_interval_s,
        )
        if settings.telegram_webhook_url:
            rt.routes.append(rt.telegram.webhook_route())
    slack = notifiers.get("slack")
    if isinstance(slack, SlackNotifier) and settings.slack_signing_secret:
        rt.slack = SlackFrontEnd(
            slack.client, settings.slack_signing_secret.get_secret_value(), core, rt.access, signer
        )
        if not settings.slack_app_token:
            rt.routes.append(rt.slack.events_route())
    return rt


def start_chat_front_ends(rt: Runtime, stop: asyncio.Event) -> None:
    """Receive commands, questions and button presses from Telegram (and Slack)."""
    if rt.telegram is not None:
        telegram = rt.telegram
        started = rt.supervisor.spawn("telegram", lambda: telegram.start(stop), stop, once=True)
        # python-telegram-bot runs the polling loop itself (and retries network errors):
        # once started, watch that it still runs.
        rt.supervisor.watch("telegram-polling", lambda: not started.done() or telegram.polling())
        rt.closers.insert(0, telegram.stop)
    if rt.slack is not None and rt.settings.slack_app_token:
        handler = AsyncSocketModeHandler(rt.slack.app, rt.settings.slack_app_token.get_secret_value())
        rt.supervisor.spawn("slack-socket-mode", lambda: _socket_mode(handler, stop), stop, once=True)
        rt.closers.insert(0, handler.close_async)


async def _socket_mode(handler: AsyncSocketModeHandler, stop: asyncio.Event) -> None:
    """Slack Socket Mode: an outbound websocket instead of HTTP events (retried while Slack is away)."""
    delay = 1.0
    while not stop.is_set():
        try:
            await handler.connect_async()
            log.info("Slack: Socket Mode connected")
            return
        except (OSError, SlackApiError, aiohttp.ClientError) as exc:
            log.warning("Slack Socket Mode not connected (%s); trying again in %.0fs", exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, 60)


def build_narrator(
    settings: Settings, record: SqliteRecord, embedder: Embedder | None = None
) -> ModelAnswerer:
    """Hybrid retrieval over the record, narrated by Ollama when configured (retrieval-only otherwise)."""
    embedder = embedder or HashingEmbedder()
    docs = SqliteDocumentStore(record)
    safe = embedder.name.replace(":", "-").replace("/", "-")
    index = FaissIndex(settings.data_dir / "index" / f"documents-{safe}.faiss", embedder.dim, embedder.name)
    indexer = Indexer(docs, index, embedder)
    retrieval = RetrievalAnswerer(
        record, tz=settings.tz, retriever=Retriever(docs, index, embedder, indexer), names=docs
    )
    model = (
        OllamaModel(settings.ollama_host, settings.ollama_model, settings.ollama_timeout_s)
        if settings.ollama_host
        else None
    )
    return ModelAnswerer(retrieval, model, settings.tz, settings.ollama_timeout_s)


async def choose_embedder(settings: Settings) -> Embedder:
    """Ollama's embedding model when configured and answering; otherwise the built-in one (said once)."""
    if settings.ollama_host and settings.embed_model:
        ollama_embedder = OllamaEmbedder(settings.ollama_host, settings.embed_model)
        if await ollama_embedder.probe():
            return ollama_embedder
        log.warning(
            "embedding model %s on %s not available: using the built-in hashing embedder "
            "(word and spelling overlap, no synonyms)",
            settings.embed_model,
            settings.ollama_host,
        )
    return HashingEmbedder()


def brief_schedules(settings: Settings, routing: Routing) -> list[BriefSchedule]:
    """From the routing file's `briefs`, or every alert destination at SIGOPS_BRIEF_AT."""
    if routing.briefs is None:
        return [
            parse_schedule(d, settings.brief_at, settings.tz, settings.brief_weekdays_only)
            for d in routing.destinations
        ]
    return [
        parse_schedule(
            d, spec.at, ZoneInfo(spec.timezone) if spec.timezone else settings.tz, spec.weekdays_only
        )
        for spec in routing.briefs
        for d in spec.destinations
    ]


def start_briefs(rt: Runtime, scheduler: AsyncIOScheduler) -> BriefScheduler | None:
    """Every minute: send the briefs whose slot has come (one process of a deployment per slot)."""
    schedules = brief_schedules(rt.settings, rt.dispatcher.routing) if rt.settings.briefs_enabled else []
    if not schedules:
        return None
    notifiers = rt.deliverer.notifiers

    async def make(since: float, until: float) -> Reply:
        return await compose_brief(rt.core, since, until)

    async def send(destination: Destination, brief: object) -> None:
        notifier = notifiers.get(destination.platform)
        if notifier is None or not hasattr(notifier, "post_brief"):
            raise DeliveryFailed(f"no {destination.platform} notifier for briefs", retryable=False)
        assert isinstance(brief, Reply)
        await notifier.post_brief(destination.chat, brief)

    briefs = BriefScheduler(schedules, RedisBriefLedger(rt.redis, rt.keys), make, send)

    async def tick() -> None:
        try:
            await briefs.run_due(time.time())
        except RecordUnavailable as exc:
            log.warning("briefs wait: %s", exc)

    scheduler.add_job(
        rt.supervisor.job("briefs", tick),
        "interval",
        seconds=60,
        id="briefs",
        next_run_time=datetime.now(rt.settings.tz),
        max_instances=1,
        coalesce=True,
    )
    return briefs


def standalone_core(settings: Settings, record: SqliteRecord) -> CommandCore:
    """The command core for `sigops chat` and `ask`: the record only (a running `serve` delivers)."""
    store = SqliteNotifyStore(record)
    return CommandCore(
        record,
        RetrievalAnswerer(record),
        delivery=store,
        actions=AlertActions(store, time.time),
        chart_dir=settings.data_dir / "charts",
        tz=settings.tz,
        narrator=build_narrator(settings, record),
    )


def start_notifications(rt: Runtime, stop: asyncio.Event) -> None:
    """Run the alert pipeline and delivery (in one process of a deployment at a time)."""
    lease = RedisLeader(rt.redis, rt.keys.dispatcher_lease, _host_tag(), rt.settings.lease_ms)
    leader = Leadership(lease)
    supervise = rt.supervisor.spawn
    supervise("dispatcher", lambda: rt.dispatcher.run(stop, rt.settings.dispatch_interval_s, leader), stop)
    supervise("deliverer", lambda: rt.deliverer.run(stop, leader), stop)
    supervise("chart-warm-up", lambda: asyncio.to_thread(warm_up_charts), stop, once=True)


class ChartMaker:
    """Charts for new alert groups: the lead alert's series over the two hours before it, and since."""

    def __init__(self, record: SqliteRecord, tz: tzinfo) -> None:
        self.record = record
        self.tz = tz

    async def __call__(self, note: Notification) -> bytes | None:
        top = note.top
        if top.value is None:
            return None  # an alert from elsewhere, with no series of ours to draw
        since = top.started_at - 2 * 3600
        points = await self.record.series_points(top.series, since)
        if len(points) < 5:
            return None
        anomalies = await self.record.series_anomalies(top.series, since)
        marks = [
            ChartMark(c.ts, f"{c.change_type}: {c.text}")
            for c in await self.record.changes_since(top.service, since)
        ]
        return await asyncio.to_thread(render_chart, top.title, points, anomalies, marks, self.tz)


def start_workers(rt: Runtime, stop: asyncio.Event, count: int, prefix: str = "worker") -> None:
    """Start `count` worker tasks on the runtime's stream."""
    config = WorkerConfig(batch_size=rt.settings.worker_batch, reclaim_idle_ms=rt.settings.reclaim_idle_ms)
    host = _host_tag()
    for index in range(count):
        name = f"{prefix}-{host}-{index}"
        ownership = Ownership(
            name, rt.settings.shards, RedisShardLeases(rt.redis, rt.keys), rt.settings.lease_ms
        )
        worker = Worker(name, rt.queue, rt.processor, rt.sink, config, ownership=ownership)
        rt.supervisor.spawn(worker.name, partial(worker.run, stop), stop)


async def start_http(rt: Runtime, host: str | None = None, port: int | None = None) -> int:
    """Serve the HTTP API; return the port actually bound."""
    app = build_app(
        rt.ingest,
        {"redis": rt.queue.ping, "sqlite": rt.record.ping},
        loops=rt.supervisor.problems,
        token=rt.settings.ingest_token.get_secret_value() if rt.settings.ingest_token else None,
        max_body_bytes=rt.settings.max_body_bytes,
    )
    for path, handler in rt.routes:
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or rt.settings.http_host, rt.settings.http_port if port is None else port)
    await site.start()
    rt.runner = runner
    return int(runner.addresses[0][1])


async def prune_old_signals(rt: Runtime) -> dict[str, int]:
    """Housekeeping job: drop signals, anomalies and changes older than the retention period."""
    cutoff = time.time() - rt.settings.retention_days * 86400
    removed = await rt.record.prune(cutoff)
    removed["notification history"] = await rt.notify_store.prune(cutoff)
    narrator = rt.core.narrator
    if narrator is not None and narrator.retrieval.retriever and narrator.retrieval.retriever.indexer:
        removed["documents"] = await narrator.retrieval.retriever.indexer.prune(cutoff)
    if any(removed.values()):
        counts = ", ".join(f"{n} {table}" for table, n in removed.items() if n)
        log.info("retention: removed %s older than %d days", counts, rt.settings.retention_days)
    return removed


def start_scheduler(rt: Runtime) -> AsyncIOScheduler:
    """The scheduler for periodic jobs: retention and the pull sources (briefs later)."""
    scheduler = AsyncIOScheduler(timezone=rt.settings.tz)
    job = rt.supervisor.job
    for name, poll in pull_sources(rt).items():
        scheduler.add_job(
            job(name, poll),
            "interval",
            seconds=rt.settings.pull_interval_s,
            id=name,
            next_run_time=datetime.now(rt.settings.tz),
            max_instances=1,
            coalesce=True,
        )
    narrator = rt.core.narrator
    if narrator is not None and narrator.retrieval.retriever is not None:
        indexer = narrator.retrieval.retriever.indexer
        if indexer is not None:
            scheduler.add_job(
                job("index-sync", indexer.sync),
                "interval",
                seconds=30,
                id="index",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(rt.settings.tz),
            )
            scheduler.add_job(
                job("index-compaction", indexer.rebuild),
                "cron",
                hour=4,
                minute=17,
                id="index-compaction",
                max_instances=1,
                coalesce=True,
            )
    scheduler.add_job(
        job("retention", partial(prune_old_signals, rt)),
        "interval",
        hours=1,
        id="retention",
        next_run_time=datetime.now(rt.settings.tz),
        max_instances=1,
        coalesce=True,
    )
    start_briefs(rt, scheduler)
    scheduler.start()
    return scheduler


def pull_sources(rt: Runtime) -> dict[str, Callable[[], Awaitable[int]]]:
    """The configured Prometheus and probe sources, by job name."""
    settings = rt.settings
    jobs: dict[str, Callable[[], Awaitable[int]]] = {}
    if not (settings.prometheus_url and settings.prometheus_queries) and not settings.probes:
        return jobs
    session = aiohttp.ClientSession()
    rt.closers.append(session.close)

    async def publish(signals: Sequence[Signal]) -> None:
        await rt.ingest.publish(signals)

    if settings.prometheus_url and settings.prometheus_queries:
        queries = [PromQuery(q.name, q.query, q.step_s, q.service) for q in settings.prometheus_queries]
        cursors = RedisCursorStore(rt.redis, rt.keys)
        jobs["prometheus"] = PrometheusSource(
            settings.prometheus_url, queries, cursors, publish, session
        ).poll
    if settings.probes:
        probes = [Probe(p.name, p.url, p.timeout_s, p.expect_status, p.service) for p in settings.probes]
        jobs["probes"] = ProbeSource(probes, publish, session).poll
    return {name: _logged(name, poll) for name, poll in jobs.items()}


def _logged(name: str, poll: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        try:
            return await poll()
        except QueueUnavailable as exc:  # Redis down: the next interval tries again
            log.warning("%s poll not published: %s", name, exc)
            return 0

    return run


def _host_tag() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"
