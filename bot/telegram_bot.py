"""The Telegram front end (python-telegram-bot, asyncio): commands, questions, alert buttons.

Thin: each handler finds who is talking, checks the chat is allowed, calls the command
core and renders its `Reply` as Telegram HTML. Long polling by default; webhook mode
(`SIGOPS_TELEGRAM_WEBHOOK_URL`) receives updates on the SigOps HTTP server, with
Telegram's secret-token header checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from telegram import Bot, BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, Update
from telegram.constants import ChatType, ParseMode
from telegram.error import NetworkError, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.access import Access
from bot.callbacks import CallbackSigner, ForgedCallback
from bot.commands import COMMANDS, CommandContext, CommandCore
from bot.reply import Reply
from bot.telegram_format import CAPTION_LIMIT, MESSAGE_LIMIT, escape, split

log = logging.getLogger(__name__)

THINKING = "🤔 Thinking…"
STREAM_EDIT_S = 1.5  # at most one edit this often while an answer streams in
WEBHOOK_PATH = "/telegram/webhook"


class TelegramFrontEnd:
    def __init__(
        self,
        bot: Bot,
        core: CommandCore,
        access: Access,
        signer: CallbackSigner,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        poll_interval_s: float = 0.0,
    ) -> None:
        self.core = core
        self.access = access
        self.signer = signer
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.poll_interval_s = poll_interval_s
        self.refused: set[int] = set()
        self.app: Application[Any, Any, Any, Any, Any, Any] = ApplicationBuilder().bot(bot).build()
        self.app.add_handler(TypeHandler(Update, self._gate), group=-1)
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self.app.add_handler(MessageHandler(filters.COMMAND, self._on_command))
        self.app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self._on_text))
        self.app.add_error_handler(self._on_error)

    @property
    def bot(self) -> Bot:
        return self.app.bot

    async def start(self, stop: asyncio.Event) -> None:
        """Connect (retrying while Telegram is unreachable), register commands, receive updates."""
        delay = 1.0
        while not stop.is_set():
            try:
                await self.app.initialize()
                break
            except (NetworkError, TelegramError) as exc:
                log.warning("Telegram not reachable (%s); trying again in %.0fs", exc, delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    delay = min(delay * 2, 60)
        if stop.is_set():
            return
        await self.app.start()
        commands = [BotCommand(c.name, c.summary[:256]) for c in COMMANDS.values()]
        try:
            await self.bot.set_my_commands(commands)
        except TelegramError as exc:
            log.warning("Telegram: could not register the command list: %s", exc)
        if self.webhook_url:
            await self.bot.set_webhook(
                self.webhook_url,
                secret_token=self.webhook_secret,
                allowed_updates=["message", "callback_query"],
            )
            log.info("Telegram: webhook mode at %s", self.webhook_url)
        else:
            assert self.app.updater is not None
            await self.app.updater.start_polling(
                poll_interval=self.poll_interval_s, timeout=10, allowed_updates=["message", "callback_query"]
            )
            log.info("Telegram: long polling as @%s", self.bot.username)

    def polling(self) -> bool:
        """Whether updates are being received (webhook mode: always, the HTTP server takes them)."""
        return bool(self.webhook_url) or (self.app.updater is not None and self.app.updater.running)

    async def stop(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        if self.app._initialized:
            await self.app.shutdown()

    def webhook_route(self) -> tuple[str, Callable[[web.Request], Awaitable[web.Response]]]:
        """The aiohttp route that takes Telegram's webhook calls."""

        async def receive(request: web.Request) -> web.Response:
            given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
            if not self.webhook_secret or not hmac.compare_digest(given, self.webhook_secret):
                log.warning("Telegram webhook call with a wrong secret token from %s", request.remote)
                return web.json_response({"error": "wrong secret token"}, status=401)
            try:
                data = orjson.loads(await request.read())
                if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                    raise ValueError("not a Telegram Update object (no integer update_id)")
                update = Update.de_json(data, self.bot)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # orjson's error is a ValueError
                log.warning("Telegram webhook: unreadable update refused: %s", str(exc)[:200])
                return web.json_response({"error": f"unreadable update: {str(exc)[:200]}"}, status=400)
            await self.app.update_queue.put(update)
            return web.json_response({"ok": True})

        return WEBHOOK_PATH, receive

    # ---- handlers ----

    async def _gate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Serve only allow-listed chats; others get one polite refusal, then silence."""
        chat, user = update.effective_chat, update.effective_user
        if chat is None or user is None:
            raise ApplicationHandlerStop
        if self.access.chat_allowed("telegram", str(chat.id), str(user.id), chat.type == ChatType.PRIVATE):
            return
        log.warning(
            "Telegram: refused %s (user %s, %s) in chat %s", user.full_name, user.id, chat.type, chat.id
        )
        if chat.id not in self.refused:
            self.refused.add(chat.id)
            await self.bot.send_message(
                chat.id,
                "Sorry, this chat is not set up for SigOps. An admin can add it "
                f"(chat id {chat.id}) to SIGOPS_TELEGRAM_CHAT_IDS.",
            )
        if update.callback_query is not None:
            await update.callback_query.answer("Not allowed here.")
        raise ApplicationHandlerStop

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A /command: run it; /ask shows a thinking message that becomes the answer."""
        message = update.effective_message
        if message is None or not message.text:
            return
        command = self.core.command_of(message.text)
        if command is not None and command.name == "ask":
            await self._answer(update, message.text)
            return
        reply = await self.core.handle(self._context(update), message.text)
        await self.send(message.chat_id, reply, reply_to=message.message_id)

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Plain text: a question, in a direct chat, or in a group when it mentions or answers the bot."""
        message = update.effective_message
        if message is None or not message.text:
            return
        text = message.text
        if message.chat.type != ChatType.PRIVATE:
            mention = f"@{self.bot.username}" if self.bot.username else None
            replied = (
                message.reply_to_message is not None
                and message.reply_to_message.from_user is not None
                and message.reply_to_message.from_user.id == self.bot.id
            )
            if not replied and not (mention and mention.lower() in text.lower()):
                return  # people talking among themselves
            if mention:
                text = text.replace(mention, "").strip()
        await self._answer(update, f"ask {text}")

    async def _answer(self, update: Update, line: str) -> None:
        message = update.effective_message
        assert message is not None
        thinking = await message.reply_text(THINKING)
        last = 0.0

        async def progress(text: str) -> None:
            """Let the answer fill in as the model writes it, within Telegram's edit rate."""
            nonlocal last
            if time.monotonic() - last >= STREAM_EDIT_S and text.strip():
                last = time.monotonic()
                with contextlib.suppress(TelegramError):
                    await thinking.edit_text(
                        escape(text[: MESSAGE_LIMIT - 10]) + " …", parse_mode=ParseMode.HTML
                    )

        ctx = replace(self._context(update), progress=progress)
        reply = await self.core.handle(ctx, line)
        await self.send(message.chat_id, reply, edit=thinking)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An alert button: check its signature, run the action as the person who pressed it."""
        query = update.callback_query
        assert query is not None
        try:
            action = self.signer.verify(query.data or "")
        except ForgedCallback:
            user = query.from_user
            log.warning("Telegram: forged button data %r from %s (%s)", query.data, user.full_name, user.id)
            await query.answer("This button was not made by SigOps.", show_alert=True)
            return
        reply = await self.core.handle(self._context(update), action)
        await query.answer(reply.title[:190], show_alert=reply.error)
        # The alert message itself is edited by the alert pipeline, in every chat that shows it.

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log with context first; the person gets a short message, never a traceback."""
        where = update.to_dict() if isinstance(update, Update) else repr(update)
        log.error("Telegram handler failed for update %s", where, exc_info=context.error)
        if isinstance(update, Update) and update.effective_chat is not None:
            try:
                await self.bot.send_message(
                    update.effective_chat.id, "Sorry, that failed on my side; it is logged."
                )
            except TelegramError:
                pass

    def _context(self, update: Update) -> CommandContext:
        chat, user = update.effective_chat, update.effective_user
        assert chat is not None and user is not None
        return CommandContext(
            "telegram",
            str(user.id),
            user.full_name,
            str(chat.id),
            self.access.role_of("telegram", str(user.id)),
        )

    # ---- rendering ----

    async def send(
        self, chat_id: int, reply: Reply, *, reply_to: int | None = None, edit: Message | None = None
    ) -> None:
        """A reply as Telegram messages: photo with caption when it has an image, split under the limits."""
        keyboard = self._keyboard(reply)
        if reply.image is not None:
            parts = split(reply, CAPTION_LIMIT)
            photo = InputFile(reply.image.read_bytes(), filename=reply.image.name)
            if edit is not None:
                await edit.delete()
            await self.bot.send_photo(
                chat_id,
                photo,
                caption=parts[0],
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
                reply_to_message_id=reply_to,
            )
        else:
            parts = split(reply, MESSAGE_LIMIT)
            if edit is not None:
                await edit.edit_text(parts[0], parse_mode=ParseMode.HTML, reply_markup=keyboard)
            else:
                await self.bot.send_message(
                    chat_id,
                    parts[0],
                    parse_mode=ParseMode.HTML,
                    reply_markup=keyboard,
                    reply_to_message_id=reply_to,
                )
        for part in parts[1:]:
            await self.bot.send_message(chat_id, part, parse_mode=ParseMode.HTML)

    def _keyboard(self, reply: Reply) -> InlineKeyboardMarkup | None:
        if not reply.buttons:
            return None
        return InlineKeyboardMarkup(
            [[InlineKeyboardButton(b.label, callback_data=self.signer.sign(b.action)) for b in reply.buttons]]
        )
