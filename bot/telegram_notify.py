"""Alert groups to Telegram through python-telegram-bot's `Bot`: post, edit in place, digest.

A group's message is a photo with its chart and the first part of the text as caption
(≤ 1024 characters), or a text message; a long group continues in further messages
(parts), all edited in place later. Telegram errors are mapped to `DeliveryFailed`,
retryable or not, with Telegram's `retry_after`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, timedelta, tzinfo
from functools import partial
from typing import Any, TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from bot.alert_message import DEFAULT_LABELS, LabelView, digest_reply, group_reply, nudge
from bot.callbacks import CallbackSigner
from bot.reply import Reply
from bot.telegram_format import CAPTION_LIMIT, MESSAGE_LIMIT, escape, split
from engine import metrics
from engine.alerting.delivery import SentMessage
from engine.alerting.notify import NEW_ALERTS, REPEAT, Notification
from engine.alerting.throttle import MARGIN_S
from engine.errors import DeliveryFailed

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_INLINE_WAIT_S = 10.0

_PERMANENT_BAD_REQUEST = (
    "chat not found",
    "bot was kicked",
    "not enough rights",
    "have no rights",
    "user is deactivated",
)


def make_bot(token: str, api_url: str | None, timeout_s: float = 10.0) -> Bot:
    """A PTB `Bot` with timeouts, pointed at Telegram or at `api_url` (a self-hosted Bot API server)."""
    request = HTTPXRequest(
        connection_pool_size=16,
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        write_timeout=timeout_s,
        pool_timeout=timeout_s,
        media_write_timeout=timeout_s * 2,
    )
    base = (api_url or "https://api.telegram.org").rstrip("/")
    return Bot(token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot", request=request)


class TelegramNotifier:
    """The `ChatNotifier` for Telegram."""

    platform = "telegram"

    def __init__(
        self,
        bot: Bot,
        signer: CallbackSigner,
        tz: tzinfo = UTC,
        pace_s: float = 1.0 + MARGIN_S,
        labels: LabelView = DEFAULT_LABELS,
    ) -> None:
        self.bot = bot
        self.signer = signer
        self.tz = tz
        self.labels = labels
        self.pace_s = pace_s  # between calls to one chat, even within one delivery (parts, nudges)
        self._next_free: dict[int, float] = {}
        self._shown: OrderedDict[tuple[int, int], str] = OrderedDict()  # skip edits that change nothing

    async def post(self, chat: str, note: Notification, chart: bytes | None) -> SentMessage:
        reply = group_reply(note, self.tz, self.labels)
        return await self._post_reply(chat, reply, chart, "photo" if chart else "text")

    async def update(self, chat: str, message: SentMessage, note: Notification) -> SentMessage:
        sent = await self._edit_reply(chat, message, group_reply(note, self.tz, self.labels))
        if note.reason in (NEW_ALERTS, REPEAT):  # an edit does not notify anyone: nudge with a reply
            first = int(message.message_id.split(",")[0])
            text = escape(nudge(note, self.labels))
            await self._api(
                int(chat),
                lambda: self.bot.send_message(
                    int(chat), text, parse_mode=ParseMode.HTML, reply_to_message_id=first
                ),
                first=False,
            )
            sent = SentMessage(sent.message_id, sent.kind, sent.calls + 1)
        return sent

    async def find(self, chat: str, group_id: str) -> SentMessage | None:
        return None  # the Bot API cannot read a chat's history: an in-doubt post is sent again

    async def digest(
        self, chat: str, notes: Sequence[Notification], message: SentMessage | None
    ) -> SentMessage:
        reply = digest_reply(notes, self.tz)
        if message is None:
            return await self._post_reply(chat, reply, None, "digest")
        return await self._edit_reply(chat, message, reply)

    async def post_brief(self, chat: str, reply: Reply) -> None:
        """A brief: its chart, then as many messages as it needs, each valid HTML under 4096 characters."""
        if reply.image is not None:
            photo = InputFile(reply.image.read_bytes(), filename=reply.image.name)
            await self._api(
                int(chat), partial(self.bot.send_photo, int(chat), photo, caption="Top anomalous series")
            )
        await self._post_reply(chat, replace(reply, image=None), None, "brief")

    async def _post_reply(self, chat: str, reply: Reply, chart: bytes | None, kind: str) -> SentMessage:
        parts = split(reply, CAPTION_LIMIT if chart else MESSAGE_LIMIT)
        keyboard = self._keyboard(reply)
        chat_id = int(chat)
        if chart:
            photo = InputFile(chart, filename="chart.png")
            first = await self._api(
                chat_id,
                lambda: self.bot.send_photo(
                    chat_id, photo, caption=parts[0], parse_mode=ParseMode.HTML, reply_markup=keyboard
                ),
            )
        else:
            first = await self._api(
                chat_id,
                lambda: self.bot.send_message(
                    chat_id,
                    parts[0],
                    parse_mode=ParseMode.HTML,
                    reply_markup=keyboard,
                    disable_web_page_preview=True,
                ),
            )
        ids = [first.message_id]
        self._remember(chat_id, first.message_id, parts[0])
        for part in parts[1:]:
            try:
                more = await self._api(
                    chat_id,
                    partial(
                        self.bot.send_message,
                        chat_id,
                        part,
                        parse_mode=ParseMode.HTML,
                        disable_web_page_preview=True,
                    ),
                    first=False,
                )
            except DeliveryFailed as exc:  # the head is out: keep it, the next edit adds what is missing
                log.warning("Telegram: part %d of a message to %s not sent: %s", len(ids) + 1, chat, exc)
                break
            ids.append(more.message_id)
            self._remember(chat_id, more.message_id, part)
        return SentMessage(",".join(map(str, ids)), kind, len(ids))

    async def _edit_reply(self, chat: str, message: SentMessage, reply: Reply) -> SentMessage:
        chat_id = int(chat)
        ids = [int(i) for i in message.message_id.split(",")]
        parts = split(reply, CAPTION_LIMIT if message.kind == "photo" else MESSAGE_LIMIT)
        keyboard = self._keyboard(reply)
        calls = 0
        for index, part in enumerate(parts):
            if index >= len(ids):
                more = await self._api(
                    chat_id,
                    partial(self.bot.send_message, chat_id, part, parse_mode=ParseMode.HTML),
                    first=calls == 0,
                )
                ids.append(more.message_id)
                self._remember(chat_id, more.message_id, part)
                calls += 1
                continue
            markup = keyboard if index == 0 else None
            key = (chat_id, ids[index])
            if self._shown.get(key) == part + repr(markup):
                continue  # this part says the same as before: no call, no rate spent
            if index == 0 and message.kind == "photo":
                edited = await self._edit(
                    chat_id,
                    partial(
                        self.bot.edit_message_caption,
                        chat_id,
                        ids[0],
                        caption=part,
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup,
                    ),
                    calls == 0,
                )
            else:
                edited = await self._edit(
                    chat_id,
                    partial(
                        self.bot.edit_message_text,
                        part,
                        chat_id,
                        ids[index],
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup,
                        disable_web_page_preview=True,
                    ),
                    calls == 0,
                )
            if not edited:  # someone deleted the message: post it anew
                return await self._post_reply(
                    chat, reply, None, "text" if message.kind == "photo" else message.kind
                )
            self._shown[key] = part + repr(markup)
            calls += 1
        for stale in ids[len(parts) :]:  # the message got shorter: blank the parts it no longer needs
            if self._shown.get((chat_id, stale)) != "…":
                await self._edit(chat_id, partial(self.bot.edit_message_text, "…", chat_id, stale), False)
                self._remember(chat_id, stale, "…")
                calls += 1
        return SentMessage(",".join(map(str, ids)), message.kind, max(calls, 1))

    async def _edit(self, chat_id: int, make: Callable[[], Awaitable[Any]], first: bool) -> bool:
        """Run an edit; False when the message is gone (deleted by someone) and must be posted anew."""
        try:
            await self._api(chat_id, make, first=first)
        except DeliveryFailed as exc:
            text = str(exc).lower()
            if "message is not modified" in text:
                return True  # the same edit again (a retry after a crash): already done
            if "message to edit not found" in text or "message can't be edited" in text:
                return False
            raise
        return True

    async def _api(self, chat_id: int, make: Callable[[], Awaitable[T]], *, first: bool = True) -> T:
        """One Bot API call, paced per chat. A flood wait on a later part of a delivery is waited out
        once (retrying the whole delivery would repeat the parts already sent)."""
        await self._pace(chat_id)
        try:
            return await _call(make())
        except DeliveryFailed as exc:
            if first or exc.retry_after is None or exc.retry_after > MAX_INLINE_WAIT_S:
                raise
            metrics.RATE_LIMITED.labels("telegram").inc()  # waited out here: the deliverer never sees it
            self._next_free[chat_id] = time.monotonic() + exc.retry_after
            await self._pace(chat_id)
            return await _call(make())

    async def _pace(self, chat_id: int) -> None:
        now = time.monotonic()
        wait = self._next_free.get(chat_id, 0.0) - now
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_free[chat_id] = max(now, self._next_free.get(chat_id, 0.0)) + self.pace_s

    def _remember(self, chat_id: int, message_id: int, text: str) -> None:
        self._shown[(chat_id, message_id)] = text
        while len(self._shown) > 5000:
            self._shown.popitem(last=False)

    def _keyboard(self, reply: Reply) -> InlineKeyboardMarkup | None:
        if not reply.buttons:
            return None
        row = [InlineKeyboardButton(b.label, callback_data=self.signer.sign(b.action)) for b in reply.buttons]
        return InlineKeyboardMarkup([row])


async def _call(call: Awaitable[T]) -> T:
    """Await a Bot API call, mapping PTB's errors to DeliveryFailed."""
    try:
        return await call
    except RetryAfter as exc:
        # PTB 22 warns on `retry_after` while it moves from int to timedelta; read the stored value.
        wait = getattr(exc, "_retry_after", None) or exc.retry_after
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        raise DeliveryFailed(
            f"Telegram flood control: retry in {seconds:.0f}s", retryable=True, retry_after=seconds
        ) from exc
    except ChatMigrated as exc:
        raise DeliveryFailed(
            f"the chat moved to id {exc.new_chat_id}: update the configured chat id", retryable=False
        ) from exc
    except Forbidden as exc:
        raise DeliveryFailed(
            f"Telegram refused (bot blocked or removed from the chat): {exc}", retryable=False
        ) from exc
    except InvalidToken as exc:
        raise DeliveryFailed(f"Telegram rejected the bot token: {exc}", retryable=False) from exc
    except BadRequest as exc:
        permanent = any(p in str(exc).lower() for p in _PERMANENT_BAD_REQUEST)
        if not permanent and "message is not modified" not in str(exc).lower():
            log.error("Telegram rejected a request SigOps made: %s", exc)
        raise DeliveryFailed(f"Telegram: {exc}", retryable=False) from exc
    except (TimedOut, NetworkError) as exc:
        raise DeliveryFailed(f"Telegram unreachable: {exc}", retryable=True) from exc
    except TelegramError as exc:
        raise DeliveryFailed(f"Telegram: {exc}", retryable=True) from exc
