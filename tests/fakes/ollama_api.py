"""A fake Ollama server on 127.0.0.1 (aiohttp), shaped like Ollama's documented API, for the real client.

`/api/chat` streams NDJSON chunks (or one JSON object with `"stream": false`) of the
scripted `answer`; `/api/tags` lists `models`; `/api/embed` returns embeddings.
Failure modes: `delay_s` (slow), `first_token_s` (a long prompt evaluation before the
first word), `fail_status` (an error), a model not in `models` (404 "model not found, try
pulling it first"). Like an Ollama serving one request at a time, a generation holds the
model until it finishes or its client goes away (`abandoned` counts those). Every request
body is kept in `requests`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer


class FakeOllama(LocalServer):
    def __init__(self, models: tuple[str, ...] = ("llama3.2",)) -> None:
        super().__init__()
        self.models = list(models)
        self.answer = "Nothing to report."
        self.delay_s = 0.0
        self.first_token_s = 0.0
        self.embed_delay_s = 0.0  # per /api/embed call
        self.abandoned = 0
        self._busy = asyncio.Lock()
        self.fail_status: int | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self._chat)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/embed", self._embed)

    def chats(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path == "/api/chat"]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("/api/chat", body))
        if self.fail_status is not None:
            return web.json_response(
                {"error": "something went wrong loading the model"}, status=self.fail_status
            )
        if body.get("model") not in self.models:
            return web.json_response(
                {"error": f'model "{body.get("model")}" not found, try pulling it first'}, status=404
            )
        words = self.answer.split(" ")
        pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
        if not body.get("stream", True):
            await asyncio.sleep(self.delay_s)
            return web.json_response(self._chunk(body["model"], self.answer, done=True))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        async with self._busy:  # one generation at a time, as a CPU-only Ollama serves them
            await response.prepare(request)
            try:
                await _work(request, self.first_token_s)
                for piece in pieces:
                    await _work(request, self.delay_s / max(1, len(pieces)))
                    chunk = json.dumps(self._chunk(body["model"], piece, done=False)) + "\n"
                    await response.write(chunk.encode())
                await response.write((json.dumps(self._chunk(body["model"], "", done=True)) + "\n").encode())
                await response.write_eof()
            except ConnectionResetError:  # the client gave up: Ollama stops generating
                self.abandoned += 1
        return response

    def _chunk(self, model: str, content: str, done: bool) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "model": model,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "message": {"role": "assistant", "content": content},
            "done": done,
        }
        if done:
            chunk |= {
                "done_reason": "stop",
                "total_duration": 1,
                "load_duration": 1,
                "prompt_eval_count": 10,
                "prompt_eval_duration": 1,
                "eval_count": 10,
                "eval_duration": 1,
            }
        return chunk

    async def _tags(self, request: web.Request) -> web.Response:
        self.requests.append(("/api/tags", {}))
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2026-01-01T00:00:00Z",
                        "size": 1,
                        "digest": "sha256:0",
                    }
                    for m in self.models
                ]
            }
        )

    async def _embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("/api/embed", body))
        if body.get("model") not in self.models:
            return web.json_response({"error": f'model "{body.get("model")}" not found'}, status=404)
        await asyncio.sleep(self.embed_delay_s)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:16]] for t in texts]
        return web.json_response({"model": body["model"], "embeddings": vectors})


async def _work(request: web.Request, seconds: float) -> None:
    """Spend `seconds` generating, stopping as soon as the client has gone away."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError("client went away")
        left = end - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(0.05, left))
