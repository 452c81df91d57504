"""A fake Telegram Bot API server on 127.0.0.1 (aiohttp), for the real python-telegram-bot client.

It answers the methods SigOps uses with Bot API-shaped JSON, keeps every chat's
messages (with their edits), enforces Telegram's per-chat rate (a 429 with
`retry_after` when exceeded) and can be scripted to fail: `fail_next("sendMessage",
429, retry_after=1)`, `fail_next(..., 500)`, `fail_next(..., 403, "Forbidden: bot was
kicked")`, or to stall (`stall_s`). Updates for `getUpdates` are queued with `push_update`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer


@dataclass
class TgMessage:
    chat_id: int
    message_id: int
    text: str
    photo: bool = False
    reply_markup: dict[str, Any] | None = None
    reply_to: int | None = None
    edits: int = 0
    history: list[str] = field(default_factory=list)


@dataclass
class Failure:
    status: int
    description: str
    retry_after: int | None = None


class FakeTelegram(LocalServer):
    def __init__(self, token: str = "123:TEST", per_chat_interval_s: float | None = None) -> None:
        super().__init__()
        self.token = token
        self.per_chat_interval_s = per_chat_interval_s
        self.messages: dict[int, dict[int, TgMessage]] = defaultdict(dict)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures: defaultdict[str, deque[Failure]] = defaultdict(deque)
        self.rate_limited = 0
        self.stall_s = 0.0
        self.updates: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self._next_id = 1
        self._last_send: dict[int, float] = {}
        self.received = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/bot{token}/{method}", self._handle)

    def fail_next(
        self, method: str, status: int, description: str = "", retry_after: int | None = None
    ) -> None:
        self.failures[method].append(
            Failure(status, description or _DEFAULT_DESCRIPTIONS.get(status, "Error"), retry_after)
        )

    def chat(self, chat_id: int | str) -> list[TgMessage]:
        return sorted(self.messages[int(chat_id)].values(), key=lambda m: m.message_id)

    def method_calls(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    def push_update(self, update: dict[str, Any]) -> None:
        update.setdefault("update_id", len(self.updates) + 1)
        self.updates.append(update)

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params))
        self.received.set()
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if method == "getUpdates":  # long polling: hold the request a moment while there is nothing new
            offset = int(params.get("offset") or 0)
            for _ in range(10):
                if any(u["update_id"] >= offset for u in self.updates):
                    break
                await asyncio.sleep(0.05)
        if self.failures[method]:
            failure = self.failures[method].popleft()
            return _error(failure.status, failure.description, failure.retry_after)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(404, f"Not Found: method {method}")
        result = handler(params)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, "result": result})

    def _rate_check(self, chat_id: int) -> web.Response | None:
        if self.per_chat_interval_s is None:
            return None
        now = time.monotonic()
        last = self._last_send.get(chat_id)
        if last is not None and now - last < self.per_chat_interval_s * 0.9:
            self.rate_limited += 1
            return _error(429, "Too Many Requests: retry after 1", 1)
        self._last_send[chat_id] = now
        return None

    def _new_message(self, params: dict[str, Any], text: str, photo: bool) -> dict[str, Any] | web.Response:
        chat_id = int(params["chat_id"])
        if chat_id < 0 and chat_id == -404:
            return _error(400, "Bad Request: chat not found")
        limited = self._rate_check(chat_id)
        if limited is not None:
            return limited
        message_id = self._next_id
        self._next_id += 1
        reply = params.get("reply_parameters") or {}
        reply_to = params.get("reply_to_message_id") or reply.get("message_id")
        message = TgMessage(
            chat_id,
            message_id,
            text,
            photo,
            params.get("reply_markup"),
            int(reply_to) if reply_to else None,
            history=[text],
        )
        self.messages[chat_id][message_id] = message
        return _message_json(message)

    def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": 123, "is_bot": True, "first_name": "SigOps", "username": "sigops_test_bot"}

    def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        return self._new_message(params, str(params["text"]), photo=False)

    def _m_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        if not params.get("photo_bytes"):
            return _error(400, "Bad Request: there is no photo in the request")
        return self._new_message(params, str(params.get("caption", "")), photo=True)

    def _edit(self, params: dict[str, Any], text: str) -> dict[str, Any] | web.Response:
        chat_id = int(params["chat_id"])
        message = self.messages[chat_id].get(int(params["message_id"]))
        if message is None:
            return _error(400, "Bad Request: message to edit not found")
        if message.text == text and params.get("reply_markup") == message.reply_markup:
            return _error(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same",
            )
        limited = self._rate_check(chat_id)
        if limited is not None:
            return limited
        message.text = text
        message.reply_markup = params.get("reply_markup")
        message.edits += 1
        message.history.append(text)
        return _message_json(message)

    def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        return self._edit(params, str(params["text"]))

    def _m_editMessageCaption(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        return self._edit(params, str(params.get("caption", "")))

    def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        return [u for u in self.updates if u["update_id"] >= offset]

    def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        self.answered.append(params)
        return True

    def _m_setMyCommands(self, params: dict[str, Any]) -> bool:
        return True

    def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        return True

    def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        return True

    def _m_sendChatAction(self, params: dict[str, Any]) -> bool:
        return True


_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    403: "Forbidden: bot was kicked from the group chat",
    429: "Too Many Requests: retry after 1",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


async def _params(request: web.Request) -> dict[str, Any]:
    """The request's parameters, JSON-decoded where PTB encoded them (reply_markup, …)."""
    params: dict[str, Any] = {}
    if request.content_type == "application/json":
        return dict(await request.json())
    form = await request.post()
    for key, value in form.items():
        if hasattr(value, "file"):  # an uploaded file (the photo)
            params[f"{key}_bytes"] = value.file.read()
            params[key] = "attached"
            continue
        text = str(value)
        try:
            params[key] = json.loads(text) if text[:1] in "{[" else text
        except json.JSONDecodeError:
            params[key] = text
    if "photo" in params and params["photo"].startswith("attach://"):
        name = params["photo"].removeprefix("attach://")
        params["photo_bytes"] = params.get(f"{name}_bytes", b"")
    return params


def _message_json(message: TgMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": message.message_id,
        "date": int(time.time()),
        "chat": {
            "id": message.chat_id,
            "type": "group" if message.chat_id < 0 else "private",
            "title": "ops",
        },
        "from": {"id": 123, "is_bot": True, "first_name": "SigOps"},
    }
    if message.photo:
        body["photo"] = [
            {
                "file_id": f"photo{message.message_id}",
                "file_unique_id": f"u{message.message_id}",
                "width": 800,
                "height": 450,
            }
        ]
        body["caption"] = message.text
    else:
        body["text"] = message.text
    if message.reply_markup:
        body["reply_markup"] = message.reply_markup
    return body


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)
