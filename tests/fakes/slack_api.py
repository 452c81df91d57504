"""A fake Slack Web API on 127.0.0.1 (aiohttp), for the real slack-sdk `AsyncWebClient`.

Answers chat.postMessage / chat.update / conversations.history / the files upload
flow / auth.test with Web API-shaped JSON, keeps every channel's messages, thread
replies and files, and can be scripted to fail (`fail_next("chat.postMessage", 429,
retry_after=1)`, a 500, or an error code such as `channel_not_found`).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.server import LocalServer


@dataclass
class SlackMessage:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    edits: int = 0
    replies: list[SlackMessage] = field(default_factory=list)
    files: list[bytes] = field(default_factory=list)
    broadcast: bool = False

    def all_text(self) -> str:
        """The message's text and every text in its blocks, as a person would read them."""
        parts = [self.text]
        for block in self.blocks:
            for key in ("text",):
                if isinstance(block.get(key), dict):
                    parts.append(block[key].get("text", ""))
            for element in block.get("elements", []):
                if isinstance(element.get("text"), dict):
                    parts.append(element["text"].get("text", ""))
                elif isinstance(element.get("text"), str):
                    parts.append(element["text"])
        return "\n".join(parts)


@dataclass
class SlackFailure:
    status: int
    error: str
    retry_after: int | None = None


class FakeSlack(LocalServer):
    CHANNEL_IDS: ClassVar[dict[str, str]] = {"#alerts": "C0ALERTS", "#payments": "C0PAYMENTS"}

    def __init__(self, token: str = "xoxb-test") -> None:
        super().__init__()
        self.token = token
        self.channels: dict[str, list[SlackMessage]] = defaultdict(list)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures: defaultdict[str, deque[SlackFailure]] = defaultdict(deque)
        self.odd: defaultdict[str, deque[Any]] = defaultdict(deque)  # HTTP 200, but misshapen
        self.uploads: dict[str, bytes] = {}
        self.responses: list[dict[str, Any]] = []  # what was posted to response URLs
        self._ts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_get("/api/{method}", self._handle)  # slack-sdk reads some methods with GET
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/respond/{key}", self._respond)

    def fail_next(self, method: str, status: int, error: str = "", retry_after: int | None = None) -> None:
        self.failures[method].append(
            SlackFailure(status, error or ("ratelimited" if status == 429 else "fatal_error"), retry_after)
        )

    def answer_next(self, method: str, body: Any) -> None:
        """Answer the next call of `method` with this body (HTTP 200): a reply the client does not expect."""
        self.odd[method].append(body)

    def messages(self, channel: str) -> list[SlackMessage]:
        return self.channels[self.CHANNEL_IDS.get(channel, channel)]

    def method_calls(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if request.method == "GET":
            params: dict[str, Any] = dict(request.query)
        elif request.content_type == "application/json":
            params = dict(await request.json())
        else:
            params = {k: str(v) for k, v in (await request.post()).items()}
        params.update({k: v for k, v in request.query.items() if k not in params})  # slack-sdk's `params=`
        self.calls.append((method, params))
        if self.failures[method]:
            failure = self.failures[method].popleft()
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=headers
            )
        if self.odd[method]:
            return web.json_response(self.odd[method].popleft())
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(handler(params))

    def _channel(self, params: dict[str, Any], key: str = "channel") -> str | None:
        name = str(params.get(key, ""))
        if name in self.CHANNEL_IDS:
            return self.CHANNEL_IDS[name]
        return name if name.startswith("C0") else None

    def _next_ts(self) -> str:
        self._ts += 1
        return f"{int(time.time())}.{self._ts:06d}"

    def _find(self, channel: str, ts: str) -> SlackMessage | None:
        messages = [*self.channels[channel], *(r for m in self.channels[channel] for r in m.replies)]
        return next((m for m in messages if m.ts == ts), None)

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "user": "sigops"}

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        blocks = params.get("blocks") or []
        message = SlackMessage(
            channel,
            self._next_ts(),
            str(params.get("text", "")),
            list(blocks),
            params.get("thread_ts"),
            params.get("metadata"),
            broadcast=bool(params.get("reply_broadcast")),
        )
        if message.thread_ts:
            parent = self._find(channel, str(message.thread_ts))
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            parent.replies.append(message)
        else:
            self.channels[channel].append(message)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": {"text": message.text}}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self._find(channel or "", str(params.get("ts")))
        if channel is None or message is None:
            return {"ok": False, "error": "message_not_found"}
        message.text = str(params.get("text", ""))
        message.blocks = list(params.get("blocks") or [])
        message.edits += 1
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _m_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        with_meta = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        items = []
        for m in reversed(self.channels[channel][-int(params.get("limit", 100)) :]):
            item: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text}
            if with_meta and m.metadata:
                item["metadata"] = m.metadata
            items.append(item)
        return {"ok": True, "messages": items, "has_more": False}

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{len(self.uploads) + 1:05d}"
        self.uploads[file_id] = b""
        return {
            "ok": True,
            "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}",
            "file_id": file_id,
        }

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        import json

        files = params.get("files")
        files = json.loads(files) if isinstance(files, str) else files or []
        channel = self._channel(params, "channel_id")
        thread = params.get("thread_ts")
        for f in files:
            data = self.uploads.get(f["id"], b"")
            if channel and thread and (parent := self._find(channel, str(thread))) is not None:
                parent.files.append(data)
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title", "")} for f in files]}

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]] = await request.read()
        return web.Response(text="OK - uploaded")

    def response_url(self, key: str = "r1") -> str:
        return f"http://127.0.0.1:{self.port}/respond/{key}"

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.Response(text="ok")
