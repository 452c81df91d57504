"""Pull sources against real peers: a Prometheus server the test starts, and HTTP probes."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from engine.intake.pull import Probe, ProbeSource, PrometheusSource, PromQuery
from engine.signal import Signal
from storage.keys import Keys
from storage.redis_state import RedisCursorStore
from tests.conftest import ServerProcess, free_port

pytestmark = pytest.mark.record_free  # Redis and Prometheus only: run once, not per backend


class Collected:
    def __init__(self) -> None:
        self.signals: list[Signal] = []

    async def __call__(self, signals: Sequence[Signal]) -> None:
        self.signals.extend(signals)


@pytest.fixture
async def exporter() -> AsyncIterator[int]:
    """A tiny /metrics endpoint: a counter going up 10 per scrape and a queue depth of 42."""
    state = {"requests": 0}

    async def metrics(request: web.Request) -> web.Response:
        state["requests"] += 10
        body = (
            "# TYPE checkout_requests_total counter\n"
            f'checkout_requests_total{{instance="a"}} {state["requests"]}\n'
            "# TYPE queue_depth gauge\nqueue_depth 42\n"
        )
        return web.Response(text=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


class PrometheusServer(ServerProcess):
    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        self.workdir = workdir
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: sigops-test\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn(
            [
                "prometheus",
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )


@pytest.fixture
def prometheus(tmp_path: Path, exporter: int) -> Iterator[PrometheusServer]:
    if shutil.which("prometheus") is None:
        pytest.fail("the prometheus server is needed for this test (.ci/run installs Debian's package)")
    server = PrometheusServer(tmp_path, exporter)
    server.start()
    yield server
    server.stop()


async def wait_for_data(session: aiohttp.ClientSession, url: str, query: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}/api/v1/query", params={"query": query}) as response:
                body = await response.json()
                ready = body["status"] == "success" and bool(body["data"]["result"])
        except aiohttp.ClientError:
            ready = False
        if ready:
            await asyncio.sleep(3)  # a few more scrapes, so rate() has data at settled steps too
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"Prometheus had no data for {query} after {within_s}s")


QUERIES = [
    PromQuery("search.queue_depth", "queue_depth", step_s=1.0, service="search"),
    PromQuery(
        "checkout.requests_rate", "sum(rate(checkout_requests_total[5s]))", step_s=1.0, service="checkout"
    ),
]


async def test_prometheus_points_become_signals_and_the_cursor_resumes(
    prometheus: PrometheusServer, redis: aioredis.Redis, keys: Keys
) -> None:
    collected = Collected()
    cursors = RedisCursorStore(redis, keys)
    async with aiohttp.ClientSession() as session:
        await wait_for_data(session, prometheus.url, "sum(rate(checkout_requests_total[5s]))")
        source = PrometheusSource(prometheus.url, QUERIES, cursors, collected, session, lookback_s=20)
        first = await source.poll()
        assert first > 0
        depth = [s for s in collected.signals if s.series == "search.queue_depth"]
        assert depth and {s.value for s in depth} == {42.0}
        assert {s.source for s in depth} == {"prometheus"} and depth[0].labels["service"] == "search"
        assert depth[0].labels["job"] == "sigops-test"
        rate = [s for s in collected.signals if s.series == "checkout.requests_rate"]
        assert rate and all(s.value > 0 for s in rate)
        stamps = [s.ts for s in depth]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        cursor = await cursors.get("search.queue_depth")
        assert cursor is not None and cursor >= stamps[-1]

        await asyncio.sleep(2.5)
        before = len(collected.signals)
        assert await source.poll() > 0
        newer = [s for s in collected.signals[before:] if s.series == "search.queue_depth"]
        assert newer and min(s.ts for s in newer) > stamps[-1]  # no overlap, no gap re-read

        # A restarted SigOps (a new source, same Redis) picks up where the last left off.
        again = PrometheusSource(prometheus.url, QUERIES, RedisCursorStore(redis, keys), Collected(), session)
        assert await cursors.get("search.queue_depth") == max(s.ts for s in newer)
        await again.poll()


async def test_prometheus_down_is_survived_and_reading_resumes(
    prometheus: PrometheusServer, redis: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    collected = Collected()
    cursors = RedisCursorStore(redis, keys)
    async with aiohttp.ClientSession() as session:
        await wait_for_data(session, prometheus.url, "queue_depth")
        source = PrometheusSource(
            prometheus.url, QUERIES[:1], cursors, collected, session, lookback_s=20, timeout_s=2
        )
        assert await source.poll() > 0
        cursor = await cursors.get("search.queue_depth")

        prometheus.stop()
        await asyncio.sleep(1.5)
        assert await source.poll() == 0  # no exception: logged, retried next interval
        assert "unavailable" in caplog.text
        assert await cursors.get("search.queue_depth") == cursor  # nothing skipped

        prometheus.start()
        await wait_for_data(session, prometheus.url, "queue_depth")
        await asyncio.sleep(1.5)
        before = len(collected.signals)
        assert await source.poll() > 0
        assert min(s.ts for s in collected.signals[before:]) > cursor  # resumed after the cursor
        assert "reachable again" in caplog.text


@pytest.fixture
async def web_target() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_probes_record_up_status_and_latency(web_target: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    probes = [
        Probe("checkout.health", f"{web_target}/ok", service="checkout"),
        Probe("payments.health", f"{web_target}/broken"),
        Probe("search.health", f"{web_target}/slow", timeout_s=0.3),
        Probe("auth.health", closed),
    ]
    collected = Collected()
    async with aiohttp.ClientSession() as session:
        assert await ProbeSource(probes, collected, session).poll() == 6  # the 500 has a latency too
    by_series = {s.series: s for s in collected.signals}
    assert by_series["checkout.health.up"].value == 1.0
    assert by_series["checkout.health.up"].labels["service"] == "checkout"
    assert 0 < (by_series["checkout.health.latency_ms"].value or 0) < 1000
    assert by_series["payments.health.up"].value == 0.0
    assert by_series["payments.health.up"].labels["status"] == "500"
    assert by_series["search.health.up"].labels["error"] == "timeout"
    assert by_series["auth.health.up"].value == 0.0 and "unreachable" in (
        by_series["auth.health.up"].text or ""
    )


async def test_an_alertmanager_alert_gets_the_chart_of_its_rule_with_the_threshold(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    from urllib.parse import quote

    from bot.parts.notifications import ChartMaker
    from engine.alerting.alerts import Alert
    from engine.alerting.notify import Notification
    from engine.intake.pull import alert_graph
    from storage.sqlite import SqliteRecord

    async with aiohttp.ClientSession() as session:
        await wait_for_data(session, prometheus.url, "sum(rate(checkout_requests_total[5s]))")
        expr = "sum(rate(checkout_requests_total[5s])) > 1.5"
        source = f"http://prometheus.example:9090/graph?g0.expr={quote(expr)}&g0.tab=1"
        now = time.time()
        graph = await alert_graph(session, prometheus.url, source, {"instance": "a"}, now - 60, now)
    assert graph is not None
    assert graph.threshold == 1.5 and graph.expr == "sum(rate(checkout_requests_total[5s]))"
    assert len(graph.points) >= 2 and all(v > 0 for _, v in graph.points)

    record = await SqliteRecord.open(tmp_path / "sigops.db")
    alert = Alert(
        "a1", "alertmanager:f1", "firing", "warning", "CheckoutTraffic", "CheckoutTraffic", "checkout",
        "alertmanager", now - 20, now - 20, labels={"alertname": "CheckoutTraffic", "__link.source": source},
    )  # fmt: skip
    note = Notification(
        "g", 1, "first notification", "default", {}, (alert,), {}, frozenset(), frozenset(), now
    )
    png = await ChartMaker(record, UTC, prometheus.url, context_min_s=20)(note)
    assert png is not None and png.startswith(b"\x89PNG")
    (tmp_path / "rule-chart.png").write_bytes(png)
    assert await ChartMaker(record, UTC, None)(note) is None  # no Prometheus: no chart, no error
    await record.close()
