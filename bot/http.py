"""The HTTP server (aiohttp): signal ingest, webhooks, health and readiness."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine import metrics
from engine.errors import PayloadError, QueueUnavailable
from engine.intake.ingest import Ingest, IngestResult, decode_body
from engine.intake.webhooks import from_alertmanager, from_changes

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
READY_TIMEOUT_S = 2.0
Check = Callable[[], Awaitable[bool]]

INGEST_KEY = web.AppKey("ingest", Ingest)
CHECKS_KEY = web.AppKey("checks", dict[str, Check])
ACCEPTED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
LoopProblems = Callable[[], Mapping[str, str]]
LOOPS_KEY: web.AppKey[LoopProblems] = web.AppKey("loops")
TOKEN_KEY = web.AppKey("token", str)
MAX_BODY_KEY = web.AppKey("max_body", int)
Refresh = Callable[[], Awaitable[None]]
METRICS_KEY: web.AppKey[Refresh] = web.AppKey("metrics")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, **extra: Any) -> web.Response:
    if status in (401, 413, 415) or status >= 500:
        metrics.HTTP_REFUSED.labels(str(status)).inc()
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return json_response({"error": message, **extra}, status=status, headers=headers)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a JSON error that says what went wrong; never a traceback."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ACCEPTED_ENCODINGS:
        return _error(415, f"Content-Encoding {encoding!r} is not accepted; send gzip, deflate or none")
    try:
        if encoding not in ("", "identity"):
            await request.read()  # decompress here, where a broken body becomes a 400
        return await handler(request)
    except PayloadError as exc:
        return _error(exc.status, str(exc))
    except (RequestPayloadError, ContentEncodingError) as exc:
        return _error(
            400, f"the body could not be read as sent (Content-Encoding {encoding or 'none'}): {exc}"
        )
    except QueueUnavailable as exc:
        log.warning("ingest refused, Redis unavailable: %s", exc)
        return _error(503, "signal stream unavailable (Redis); nothing was stored, retry later")
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY_KEY]
        return _error(413, f"body larger than the limit of {limit} bytes (SIGOPS_MAX_BODY_BYTES)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:  # the last line of defence: log it, answer briefly
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal error; it has been logged")


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bearer token on /v1/* when an ingest token is configured."""
    token = request.app[TOKEN_KEY]
    if token and request.path.startswith("/v1/"):
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <SIGOPS_INGEST_TOKEN>)")
    return await handler(request)


async def _read_records(request: web.Request) -> list[Any]:
    body = await request.read()
    return decode_body(body, request.content_type)


def _accepted(result: IngestResult) -> web.Response:
    if not result.ids and result.rejected:
        return json_response({"error": "no valid records; nothing stored", **result.as_dict()}, status=400)
    return json_response(result.as_dict(), status=202)


async def post_signals(request: web.Request) -> web.Response:
    """POST /v1/signals: one object, an array, or NDJSON."""
    ingest = request.app[INGEST_KEY]
    records = await _read_records(request)
    return _accepted(await ingest.accept(records))


async def post_alertmanager(request: web.Request) -> web.Response:
    """POST /v1/webhooks/alertmanager: Alertmanager webhook, version 4."""
    payload = _single(await _read_records(request))
    return _accepted(await request.app[INGEST_KEY].accept(from_alertmanager(payload)))


async def post_grafana(request: web.Request) -> web.Response:
    """POST /v1/webhooks/grafana: Grafana alerting webhook."""
    payload = _single(await _read_records(request))
    return _accepted(await request.app[INGEST_KEY].accept(from_alertmanager(payload, source="grafana")))


async def post_changes(request: web.Request) -> web.Response:
    """POST /v1/changes: deploys, flag flips, config changes."""
    records = await _read_records(request)
    request.app[INGEST_KEY].check_size(records)
    return _accepted(await request.app[INGEST_KEY].accept(from_changes(records)))


def _single(records: list[Any]) -> Any:
    if len(records) != 1:
        raise PayloadError("expected one webhook JSON object")
    return records[0]


async def metrics_page(request: web.Request) -> web.Response:
    """GET /metrics: SigOps' own metrics in Prometheus' text format (no token, like /healthz)."""
    refresh = request.app[METRICS_KEY]
    try:
        await asyncio.wait_for(refresh(), READY_TIMEOUT_S)
    except Exception as exc:  # Redis or SQLite down: the counters still say what happened until now
        log.warning("metrics: shared gauges not refreshed: %s", exc)
    return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is up."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 only when every dependency answers."""
    checks = request.app[CHECKS_KEY]

    async def run(check: Check) -> bool:
        try:
            return await asyncio.wait_for(check(), READY_TIMEOUT_S)
        except TimeoutError:
            return False

    results = await asyncio.gather(*(run(c) for c in checks.values()))
    states: dict[str, Any] = {
        name: "ok" if ok else "unavailable" for name, ok in zip(checks, results, strict=True)
    }
    down = request.app[LOOPS_KEY]()
    states["loops"] = down or "ok"  # a background loop that is not running is an outage too
    ready = all(results) and not down
    return json_response({"ready": ready, **states}, status=200 if ready else 503)


class _BadBodyLines(logging.Filter):
    """aiohttp logs a body it cannot decompress with a traceback, twice: make that one short line.

    The client already got a 400 from aiohttp; a broken body is the client's problem, not ours.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None and not isinstance(exc, ContentEncodingError):
            exc = exc.__cause__ or exc.__context__
        if exc is None:
            return True
        if record.getMessage() == "Unhandled exception":
            return False  # the same failure as the "Error handling request" line
        record.msg, record.args, record.exc_info = (
            "refused a body that could not be decompressed: %s",
            (exc,),
            None,
        )
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_BAD_BODY_LINES = _BadBodyLines()


def build_app(
    ingest: Ingest,
    checks: dict[str, Check],
    *,
    token: str | None,
    max_body_bytes: int,
    loops: LoopProblems = dict,
    refresh_metrics: Refresh | None = None,
) -> web.Application:
    """The aiohttp application; other front ends (Slack HTTP mode) add their routes to it."""
    logging.getLogger("aiohttp.server").addFilter(_BAD_BODY_LINES)  # a set: adding it twice is one filter
    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors_middleware, auth_middleware])
    app[INGEST_KEY] = ingest
    app[CHECKS_KEY] = checks
    app[LOOPS_KEY] = loops
    app[METRICS_KEY] = refresh_metrics or _nothing
    app[TOKEN_KEY] = token or ""
    app[MAX_BODY_KEY] = max_body_bytes
    app.router.add_post("/v1/signals", post_signals)
    app.router.add_post("/v1/webhooks/alertmanager", post_alertmanager)
    app.router.add_post("/v1/webhooks/grafana", post_grafana)
    app.router.add_post("/v1/changes", post_changes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def _nothing() -> None:
    return None
