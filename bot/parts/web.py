"""HTTP: the aiohttp server with ingest, health, and the chat front ends' routes."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.http import build_app
from bot.runtime import Runtime
from engine import metrics
from engine.errors import QueueUnavailable, RecordUnavailable

log = logging.getLogger(__name__)


async def start_http(rt: Runtime, host: str | None = None, port: int | None = None) -> int:
    """Serve the HTTP API; return the port actually bound."""
    app = build_app(
        rt.ingest,
        {"redis": rt.queue.ping, rt.record.dialect: rt.record.ping},  # "sqlite" or "postgres"
        loops=rt.supervisor.problems,
        token=rt.settings.ingest_token.get_secret_value() if rt.settings.ingest_token else None,
        max_body_bytes=rt.settings.max_body_bytes,
        refresh_metrics=lambda: refresh_shared_metrics(rt),
    )
    for path, handler in rt.routes:
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or rt.settings.http_host, rt.settings.http_port if port is None else port)
    await site.start()
    rt.runner = runner
    return int(runner.addresses[0][1])


async def refresh_shared_metrics(rt: Runtime) -> None:
    """The gauges of shared state, read when Prometheus scrapes (each source on its own: one
    that is down leaves its gauges as they were and the others still refresh)."""
    metrics.LOOPS_DOWN.set(len(rt.supervisor.problems()))
    try:
        for shard, pending, lag in await rt.queue.shard_stats():
            metrics.STREAM_PENDING.labels(str(shard)).set(pending)
            metrics.STREAM_LAG.labels(str(shard)).set(lag)
    except QueueUnavailable as exc:
        log.warning("metrics: stream gauges not refreshed: %s", exc)
    try:
        metrics.SERIES_TRACKED.set(await rt.record.series_count())
        metrics.OUTBOX_BACKLOG.set(await rt.notify_store.outbox_backlog())
    except RecordUnavailable as exc:
        log.warning("metrics: record gauges not refreshed: %s", exc)
