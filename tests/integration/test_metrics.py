"""`GET /metrics`, scraped by the real Prometheus (Debian's package) as a user's would be."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import Runtime, open_runtime, start_http, start_workers
from bot.settings import Settings
from tests.conftest import REDIS_URL, ServerProcess, free_port

pytestmark = pytest.mark.redis


@pytest.fixture
async def sigops(tmp_path: Path) -> AsyncIterator[tuple[Runtime, int]]:
    prefix = f"test-metrics-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=REDIS_URL, redis_prefix=prefix, data_dir=tmp_path, briefs_enabled=False)  # type: ignore[call-arg]
    rt = await open_runtime(settings)
    stop = asyncio.Event()
    start_workers(rt, stop, 1)
    port = await start_http(rt, "127.0.0.1", 0)
    yield rt, port
    stop.set()
    await asyncio.wait(rt.tasks, timeout=15)
    async for key in rt.redis.scan_iter(match=f"{prefix}:*"):
        await rt.redis.delete(key)
    await rt.close()


class Prometheus(ServerProcess):
    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: sigops\n    metrics_path: /metrics\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.spawn(
            [
                "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )


@pytest.fixture
def prometheus(tmp_path: Path, sigops: tuple[Runtime, int]) -> Iterator[Prometheus]:
    if shutil.which("prometheus") is None:
        pytest.fail("the prometheus server is needed for this test (.ci/run installs Debian's package)")
    server = Prometheus(tmp_path, sigops[1])
    yield server
    server.stop()


async def query(session: aiohttp.ClientSession, url: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def scraped(session: aiohttp.ClientSession, url: str, promql: str, within_s: float = 40) -> float:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            result = await query(session, url, promql)
        except aiohttp.ClientError:
            result = []
        if result:
            return float(result[0]["value"][1])
        await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus never had {promql} within {within_s}s")


async def test_prometheus_scrapes_what_sigops_did(
    sigops: tuple[Runtime, int], prometheus: Prometheus
) -> None:
    port = sigops[1]
    base = f"http://127.0.0.1:{port}"
    now = time.time()
    batch = [{"series": "pay.latency", "value": 100.0 + i % 5, "ts": now - 60 + i} for i in range(60)]
    batch.append({"series": "pay.latency", "value": "fast"})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/signals", json=batch) as response:
            assert response.status == 202
        async with session.post(
            f"{base}/v1/signals", data=b"{", headers={"Content-Type": "text/csv"}
        ) as response:
            assert response.status == 415

        # The page itself: the text format, with the metrics the issue lists.
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
            names = {f.name for f in text_string_to_metric_families(await response.text())}
        for name in (
            "sigops_ingest_accepted",
            "sigops_ingest_rejected",
            "sigops_stream_pending",
            "sigops_stream_lag",
            "sigops_worker_batch_seconds",
            "sigops_series_tracked",
            "sigops_alert_changes",
            "sigops_dispatch_tick_seconds",
            "sigops_deliveries",
            "sigops_chat_rate_limited",
            "sigops_loop_restarts",
            "sigops_question_seconds",
            "sigops_model_fallbacks",
            "process_resident_memory_bytes",
        ):
            assert name in names, name

        url = f"http://127.0.0.1:{prometheus.port}"
        assert await scraped(session, url, 'up{job="sigops"}') == 1
        assert await scraped(session, url, 'sigops_ingest_accepted_total{kind="metric"}') >= 60
        assert await scraped(session, url, 'sigops_ingest_rejected_total{field="value"}') >= 1
        assert await scraped(session, url, 'sigops_http_refused_total{status="415"}') >= 1
        # The worker recorded them: the series is tracked and the stream has no lag left.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lag = await query(session, url, "sum(sigops_stream_lag) + sum(sigops_stream_pending)")
            tracked = await query(session, url, "sigops_series_tracked")
            if lag and tracked and float(lag[0]["value"][1]) == 0 and float(tracked[0]["value"][1]) >= 1:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("Prometheus never saw the stream drained and the series tracked")
        assert await scraped(session, url, "sigops_worker_signals_total") >= 60
        assert await scraped(session, url, "sigops_loops_down") == 0
