"""The composition root: `open_runtime` builds a process from its parts, one module each.

bot/parts/stores.py         Redis, the signal stream, the record; detection on them
bot/parts/workers.py        the stream workers and their shard leases
bot/parts/notifications.py  routing, notifiers, the alert pipeline, delivery, charts
bot/parts/front_ends.py     Telegram and Slack receiving commands and questions
bot/parts/answers.py        embedder, retrieval, the model, the command core
bot/parts/scheduling.py     pulls, index sync, retention, morning briefs
bot/parts/web.py            the HTTP server
"""

from __future__ import annotations

from pathlib import Path

from bot.console import ConsoleNotifier
from bot.parts.answers import build_core, build_narrator, choose_embedder, standalone_core
from bot.parts.detection import build_detection
from bot.parts.front_ends import access_of, attach_front_ends, start_chat_front_ends
from bot.parts.notifications import (
    ChartMaker,
    build_notifications,
    build_outputs,
    build_routing,
    callback_signer,
    start_notifications,
)
from bot.parts.scheduling import brief_schedules, prune_old_signals, pull_sources, start_scheduler
from bot.parts.stores import build_processor, make_redis, open_stores
from bot.parts.web import start_http
from bot.parts.workers import start_workers
from bot.runtime import Runtime
from bot.settings import Settings
from engine.alerting.routing import DEFAULT_TIMING, Timing
from engine.intake.ingest import Ingest
from engine.supervise import Supervisor

__all__ = [
    "ChartMaker", "Runtime", "brief_schedules", "build_detection", "build_narrator", "build_routing",
    "callback_signer", "choose_embedder", "make_redis", "open_runtime", "prune_old_signals",
    "pull_sources", "standalone_core", "start_chat_front_ends", "start_http", "start_notifications",
    "start_scheduler", "start_workers",
]  # fmt: skip


async def open_runtime(
    settings: Settings,
    *,
    sqlite_path: Path | None = None,
    console: ConsoleNotifier | None = None,
    timing: Timing = DEFAULT_TIMING,
) -> Runtime:
    """Build every part of a process; nothing runs until the `start_*` functions are called."""
    outputs = build_outputs(settings, console, timing)
    embedder = await choose_embedder(settings)
    stores = await open_stores(settings, sqlite_path)
    notifications = build_notifications(settings, stores.record, outputs)
    supervisor = Supervisor()
    rt = Runtime(
        settings,
        stores.redis,
        stores.embedded,
        stores.keys,
        stores.queue,
        stores.record,
        build_processor(settings, stores),
        Ingest(stores.queue, max_records=settings.max_batch),
        build_core(settings, stores.record, notifications, embedder, supervisor),
        notifications.sink,
        notifications.store,
        notifications.dispatcher,
        notifications.deliverer,
        supervisor,
        access=access_of(settings),
        signer=outputs.signer,
    )
    rt.closers.extend(outputs.closers)
    attach_front_ends(rt, outputs.notifiers)
    return rt
