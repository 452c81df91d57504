"""The scheduler: pulls, index sync and compaction, retention, and the morning briefs."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from zoneinfo import ZoneInfo

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.commands import compose_brief
from bot.reply import Reply
from bot.runtime import Runtime
from bot.settings import Settings
from engine.alerting.routing import (
    Destination,
    Routing,
)
from engine.brief.schedule import BriefSchedule, BriefScheduler, parse_schedule
from engine.errors import DeliveryFailed, QueueUnavailable, RecordUnavailable
from engine.intake.pull import Probe, ProbeSource, PrometheusSource, PromQuery
from engine.signal import Signal
from storage.redis_brief import RedisBriefLedger
from storage.redis_state import RedisCursorStore

log = logging.getLogger(__name__)


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
    if settings.prometheus_url and not settings.prometheus_queries:
        log.warning(
            "SIGOPS_PROMETHEUS_URL is set but SIGOPS_PROMETHEUS_QUERIES is empty: nothing is pulled "
            '(set it to a JSON list of {"name", "query"} objects, see .env.example)'
        )
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
