"""Alert groups to Slack through slack-sdk's `AsyncWebClient`: Block Kit, edits, thread replies, charts.

A group's message is posted once (with metadata naming the group, so a post that a
crash left unconfirmed can be found again instead of posted twice), then updated in
place with `chat.update`; each change also gets a short reply in the message's thread.
The chart is uploaded into the thread. Slack errors become `DeliveryFailed`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, tzinfo
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.alert_message import DEFAULT_LABELS, LabelView, digest_reply, group_reply, nudge
from bot.callbacks import CallbackSigner
from bot.reply import Reply
from bot.slack_format import blocks, escape, fallback_text
from engine.alerting.delivery import SentMessage
from engine.alerting.notify import FIRST, REPEAT, Notification
from engine.errors import DeliveryFailed

log = logging.getLogger(__name__)

METADATA_EVENT = "sigops_alert_group"
_PERMANENT = {  # errors that the same request will meet again
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
    "no_permission",
    "restricted_action",
    "invalid_blocks",
    "msg_too_long",
    "invalid_arguments",
}


def make_client(token: str, api_url: str | None, timeout_s: float = 10.0) -> AsyncWebClient:
    """slack-sdk's client with a timeout, pointed at Slack or at `api_url`."""
    base = (api_url or "https://slack.com/api/").rstrip("/") + "/"
    return AsyncWebClient(token=token, base_url=base, timeout=int(timeout_s))


class SlackNotifier:
    """The `ChatNotifier` for Slack."""

    platform = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        signer: CallbackSigner,
        tz: tzinfo = UTC,
        labels: LabelView = DEFAULT_LABELS,
    ) -> None:
        self.client = client
        self.signer = signer
        self.tz = tz
        self.labels = labels

    async def post(self, chat: str, note: Notification, chart: bytes | None) -> SentMessage:
        reply = group_reply(note, self.tz, self.labels)
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"group": note.group_id}}
        response = await _call(
            self.client.chat_postMessage(
                channel=chat,
                text=fallback_text(reply),
                blocks=blocks(reply, self.signer),
                metadata=metadata,
                unfurl_links=False,
            )
        )
        channel, ts = str(response["channel"]), str(response["ts"])
        calls = 1
        if chart:
            try:
                await _call(
                    self.client.files_upload_v2(
                        channel=channel,
                        thread_ts=ts,
                        content=chart,
                        filename="chart.png",
                        title=note.top.series,
                    )
                )
                calls += 1
            except DeliveryFailed as exc:  # the alert is out; a missing chart is not worth a duplicate
                log.warning("Slack chart upload for group %s failed: %s", note.group_id, exc)
            except Exception:  # slack-sdk itself broke on the reply (seen: a TypeError): same reasoning
                log.exception("Slack chart upload for group %s failed inside slack-sdk", note.group_id)
        return SentMessage(f"{channel}/{ts}", "text", calls)

    async def update(self, chat: str, message: SentMessage, note: Notification) -> SentMessage:
        channel, ts = message.message_id.split("/", 1)
        reply = group_reply(note, self.tz, self.labels)
        try:
            await _call(
                self.client.chat_update(
                    channel=channel,
                    ts=ts,
                    text=fallback_text(reply),
                    blocks=blocks(reply, self.signer),
                )
            )
        except DeliveryFailed as exc:
            if "message_not_found" not in str(exc) and "cant_update_message" not in str(exc):
                raise
            return await self.post(chat, note, None)  # someone deleted it: post it again
        calls = 1
        if note.reason != FIRST:
            text = escape(nudge(note, self.labels))
            await _call(
                self.client.chat_postMessage(
                    channel=channel,
                    thread_ts=ts,
                    text=text,
                    reply_broadcast=note.reason == REPEAT,
                )
            )
            calls += 1
        return SentMessage(message.message_id, message.kind, calls)

    async def find(self, chat: str, group_id: str) -> SentMessage | None:
        """The group's message among the channel's latest, by the metadata it was posted with."""
        try:
            response = await _call(
                self.client.conversations_history(channel=chat, limit=100, include_all_metadata=True)
            )
        except DeliveryFailed as exc:
            log.warning("could not look for an unconfirmed Slack post in %s: %s", chat, exc)
            return None
        for item in response.get("messages") or []:
            meta = item.get("metadata") or {}
            if (
                meta.get("event_type") == METADATA_EVENT
                and (meta.get("event_payload") or {}).get("group") == group_id
            ):
                channel = str(response.get("channel") or chat)
                return SentMessage(f"{channel}/{item['ts']}", "text", 1)
        return None

    async def digest(
        self, chat: str, notes: Sequence[Notification], message: SentMessage | None
    ) -> SentMessage:
        reply = digest_reply(notes, self.tz)
        if message is None:
            response = await _call(
                self.client.chat_postMessage(channel=chat, text=fallback_text(reply), blocks=blocks(reply))
            )
            return SentMessage(f"{response['channel']}/{response['ts']}", "digest")
        channel, ts = message.message_id.split("/", 1)
        await _call(
            self.client.chat_update(channel=channel, ts=ts, text=fallback_text(reply), blocks=blocks(reply))
        )
        return message

    async def post_brief(self, chat: str, reply: Reply) -> None:
        """A brief as one Block Kit message (sections split under Slack's limits)."""
        response = await _call(
            self.client.chat_postMessage(channel=chat, text=fallback_text(reply), blocks=blocks(reply))
        )
        if reply.image is not None:
            await _call(
                self.client.files_upload_v2(
                    channel=str(response["channel"]),
                    thread_ts=str(response["ts"]),
                    file=str(reply.image),
                    filename=reply.image.name,
                    title="Top anomalous series",
                )
            )

    def render(self, reply: Reply) -> list[dict[str, Any]]:
        return blocks(reply, self.signer)


async def _call(call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
    """Await a Web API call, mapping slack-sdk's errors to DeliveryFailed."""
    try:
        return await call
    except SlackApiError as exc:
        status = exc.response.status_code
        error = str(exc.response.get("error", "")) if isinstance(exc.response.data, dict) else ""
        if status == 429:
            retry_after = float(
                exc.response.headers.get("Retry-After", exc.response.headers.get("retry-after", 1))
            )
            raise DeliveryFailed(
                f"Slack rate limit: retry in {retry_after:.0f}s", retryable=True, retry_after=retry_after
            ) from exc
        if error in _PERMANENT:
            raise DeliveryFailed(f"Slack refused: {error}", retryable=False) from exc
        if status >= 500 or error in {
            "internal_error",
            "fatal_error",
            "service_unavailable",
            "request_timeout",
        }:
            raise DeliveryFailed(f"Slack failed ({status} {error})", retryable=True) from exc
        raise DeliveryFailed(f"Slack refused: {error or status}", retryable=False) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryFailed(f"Slack unreachable: {exc!r}", retryable=True) from exc
