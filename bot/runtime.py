"""What a running SigOps process is made of (built by `bot.app.open_runtime`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp import web

from bot.access import Access
from bot.callbacks import CallbackSigner
from bot.commands import CommandCore
from bot.settings import Settings
from bot.slack_app import SlackFrontEnd
from bot.telegram_bot import TelegramFrontEnd
from engine.alerting.alerts import Alert
from engine.alerting.delivery import Deliverer
from engine.alerting.notify import Dispatcher
from engine.intake.ingest import Ingest
from engine.intake.worker import SignalProcessor
from engine.supervise import Supervisor
from storage.keys import Keys
from storage.notify_store import NotifyStore
from storage.record import Record
from storage.redis_stream import RedisSignalQueue

log = logging.getLogger(__name__)


class DispatchSink:
    """The workers' `AlertSink`: committed alert changes wake the dispatcher at once."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None

    async def notify(self, alert: Alert, change: str) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()


@dataclass
class Runtime:
    """Everything a running SigOps process is made of."""

    settings: Settings
    redis: aioredis.Redis
    embedded: bool
    keys: Keys
    queue: RedisSignalQueue
    record: Record
    processor: SignalProcessor
    ingest: Ingest
    core: CommandCore
    sink: DispatchSink
    notify_store: NotifyStore
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


def _host_tag() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"
