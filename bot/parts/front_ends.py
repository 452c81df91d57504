"""Chat front ends: Telegram and Slack receiving commands, questions and button presses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError

from bot.access import Access
from bot.runtime import Runtime
from bot.settings import Settings
from bot.slack_app import SlackFrontEnd
from bot.slack_notify import SlackNotifier
from bot.telegram_bot import TelegramFrontEnd
from bot.telegram_notify import TelegramNotifier
from engine.alerting.delivery import ChatNotifier

log = logging.getLogger(__name__)


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


def access_of(settings: Settings) -> Access:
    """Who may talk to SigOps from which chat, with which role."""
    return Access(
        {"telegram": {str(c) for c in settings.telegram_chat_ids}, "slack": set(settings.slack_channels)},
        settings.roles,
        settings.default_role,
    )


def attach_front_ends(rt: Runtime, notifiers: Mapping[str, ChatNotifier]) -> None:
    """Telegram and Slack front ends on the notifiers' clients, with their HTTP routes."""
    settings, signer = rt.settings, rt.signer
    assert signer is not None
    telegram = notifiers.get("telegram")
    if isinstance(telegram, TelegramNotifier):
        secret = settings.telegram_webhook_secret
        rt.telegram = TelegramFrontEnd(
            telegram.bot,
            rt.core,
            rt.access,
            signer,
            webhook_url=settings.telegram_webhook_url,
            webhook_secret=secret.get_secret_value() if secret else None,
            poll_interval_s=settings.telegram_poll_interval_s,
        )
        if settings.telegram_webhook_url:
            rt.routes.append(rt.telegram.webhook_route())
    slack = notifiers.get("slack")
    if isinstance(slack, SlackNotifier) and settings.slack_signing_secret:
        signing = settings.slack_signing_secret.get_secret_value()
        rt.slack = SlackFrontEnd(slack.client, signing, rt.core, rt.access, signer)
        if not settings.slack_app_token:
            rt.routes.append(rt.slack.events_route())
