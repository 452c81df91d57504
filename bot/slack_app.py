"""The Slack front end (slack-bolt AsyncApp): `/sigops <command>`, app mentions, alert buttons.

Thin: a middleware decides who may talk (allow-listed channels, a role per user); each
listener acks first (Slack wants an answer within 3 seconds), then runs the command
core and renders its `Reply` as Block Kit. HTTP mode mounts at `POST /slack/events` on
the SigOps HTTP server; bolt verifies each request's signature and timestamp.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.request.internals import parse_body
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Access
from bot.callbacks import CallbackSigner, ForgedCallback
from bot.commands import CommandContext, CommandCore
from bot.reply import Reply
from bot.slack_format import blocks, fallback_text

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SHARE = "share"  # `/sigops share status`: the answer goes to the channel
THINKING = "🤔 Thinking…"
_MENTION = re.compile(r"<@[A-Z0-9]+>\s*")


def _unreadable(raw: bytes, content_type: str) -> str | None:
    """Why a (signed) body is not a Slack request bolt can read; None when it is one."""
    try:
        body = parse_body(raw.decode("utf-8"), content_type)
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        return f"not a Slack request body: {str(exc)[:160]}"
    if not isinstance(body, dict):
        return f"not a Slack request body: expected an object, got {type(body).__name__}"
    if not any(isinstance(body.get(k), str) for k in ("type", "command", "ssl_check")):
        return "not a Slack request body: no type or command"
    return None


class SlackFrontEnd:
    def __init__(
        self,
        client: AsyncWebClient,
        signing_secret: str,
        core: CommandCore,
        access: Access,
        signer: CallbackSigner,
    ) -> None:
        self.core = core
        self.access = access
        self.signer = signer
        self.app = AsyncApp(client=client, signing_secret=signing_secret, request_verification_enabled=True)
        self._verifier = SignatureVerifier(signing_secret)
        self.app.middleware(self._authorize)
        self.app.command("/sigops")(self._on_command)
        self.app.event("app_mention")(self._on_mention)
        self.app.action(re.compile(r"^sigops_\d+$"))(self._on_button)
        self.app.error(self._on_error)

    def events_route(self) -> tuple[str, Callable[[web.Request], Awaitable[web.Response]]]:
        """The aiohttp route for slash commands, events and interactions (HTTP mode)."""

        async def receive(request: web.Request) -> web.Response:
            raw = await request.read()
            problem = _unreadable(raw, request.content_type)
            signed = problem is None or self._signed(raw, request.headers)
            if problem and not signed:
                return web.json_response({"error": "invalid request signature"}, status=401)
            if problem:
                log.warning("Slack: signed request with an unreadable body refused: %s", problem)
                return web.json_response({"error": problem}, status=400)
            # Readable but unsigned requests go to bolt, which answers them 401.
            response = await self.app.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(response)

        return EVENTS_PATH, receive

    def _signed(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        """Whether Slack signed these bytes (a body that is not UTF-8 cannot have been)."""
        try:
            return self._verifier.is_valid(
                raw, headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
            )
        except (UnicodeDecodeError, ValueError):
            return False

    async def _authorize(
        self,
        context: AsyncBoltContext,
        body: dict[str, Any],
        next: Callable[[], Awaitable[None]],
    ) -> BoltResponse | None:
        """Middleware: only allow-listed channels (or a DM with someone in the role map) are served."""
        user, channel = context.user_id or "", context.channel_id or ""
        private = channel.startswith("D")
        if body.get("type") == "url_verification" or self.access.chat_allowed(
            "slack", channel, user, private
        ):
            role = self.access.role_of("slack", user)
            context["sigops"] = CommandContext("slack", user, _name(body) or user, channel, role)
            await next()
            return None
        log.warning("Slack: refused user %s in channel %s", user, channel)
        if body.get("command") or body.get("type") == "block_actions":  # answer that person once, privately
            refusal = (
                f"Sorry, this channel is not set up for SigOps. An admin can add it ({channel}) "
                "to SIGOPS_SLACK_CHANNELS."
            )
            return BoltResponse(
                status=200,
                body=json.dumps({"response_type": "ephemeral", "text": refusal}),
                headers={"content-type": "application/json"},
            )
        return BoltResponse(status=200, body="")  # an event: nothing to say, and no data to leak

    async def _on_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        """`/sigops <command>`: ack at once; answers and charts follow through the response URL."""
        text = command.get("text", "").strip() or "help"
        shared = text.lower().startswith(SHARE + " ")
        if shared:
            text = text[len(SHARE) :].strip()
        known = self.core.command_of(text)
        asking = self.core.is_question(text) or (known is not None and known.name == "ask")
        if asking:
            await ack(response_type="in_channel", text=THINKING)
        else:
            await ack()
        reply = await self.core.handle(context["sigops"], text)
        # A question's answer and a chart (a file in the channel) are for the channel; `status`,
        # help and typos only for the one who typed them, unless shared (`/sigops share status`).
        public = asking or shared or reply.image is not None
        await self._respond(respond, reply, context, public=public)

    async def _on_mention(
        self, event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient
    ) -> None:
        """`@SigOps …` in a channel: the answer goes in a thread under the mention."""
        text = _MENTION.sub("", event.get("text", "")).strip() or "help"
        channel, thread = event["channel"], event.get("thread_ts") or event["ts"]
        thinking = await client.chat_postMessage(channel=channel, thread_ts=thread, text=THINKING)
        reply = await self.core.handle(context["sigops"], text)
        await client.chat_update(
            channel=channel, ts=thinking["ts"], text=fallback_text(reply), blocks=blocks(reply, self.signer)
        )
        await self._upload(client, channel, reply, thread)

    async def _on_button(
        self, ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        """An alert button: check its signature, run it as the person who pressed it."""
        await ack()
        try:
            line = self.signer.verify(action.get("value", ""))
        except ForgedCallback:
            log.warning("Slack: forged button value %r from %s", action.get("value"), context.user_id)
            await respond(
                text="This button was not made by SigOps.", response_type="ephemeral", replace_original=False
            )
            return
        reply = await self.core.handle(context["sigops"], line)
        # The alert message itself is edited by the alert pipeline, in every chat that shows it.
        await respond(text=fallback_text(reply), response_type="ephemeral", replace_original=False)

    async def _on_error(
        self, error: Exception, body: dict[str, Any], respond: AsyncRespond | None = None
    ) -> None:
        """Log with context first; the person gets a short message, never a traceback."""
        log.error(
            "Slack handler failed for %s",
            {k: body.get(k) for k in ("type", "command", "team_id")},
            exc_info=error,
        )
        if respond is not None and body.get("response_url"):
            try:
                await respond(text="Sorry, that failed on my side; it is logged.", response_type="ephemeral")
            except SlackApiError:
                pass

    async def _respond(
        self, respond: AsyncRespond, reply: Reply, context: AsyncBoltContext, *, public: bool
    ) -> None:
        await respond(
            text=fallback_text(reply),
            blocks=blocks(reply, self.signer),
            response_type="in_channel" if public else "ephemeral",
            replace_original=public,
        )
        if public and context.client is not None and context.channel_id:
            await self._upload(context.client, context.channel_id, reply, None)

    async def _upload(self, client: AsyncWebClient, channel: str, reply: Reply, thread: str | None) -> None:
        if reply.image is None:
            return
        try:
            await client.files_upload_v2(
                channel=channel,
                thread_ts=thread,
                file=str(reply.image),
                filename=reply.image.name,
                title=reply.title[:200],
            )
        except SlackApiError as exc:
            log.warning("Slack: chart upload to %s failed: %s", channel, exc)


def _name(body: dict[str, Any]) -> str:
    """The display name Slack sent with the request (commands: user_name; actions: user.name)."""
    user = body.get("user")
    if isinstance(user, dict):
        return str(user.get("name") or user.get("username") or "")
    return str(body.get("user_name") or "")
