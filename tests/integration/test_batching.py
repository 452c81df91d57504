"""Alerts do not depend on how the stream is cut into batches (property-based, real SQLite).

A backlog after a crash, a backfill posted in one request, or a slow worker puts whole
episodes into one batch. Whatever the cut, the same alerts must be recorded (open and
close times, counts) as when every point is its own batch, and each reaches the chat.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.alert_message import group_reply
from bot.console import render_text
from engine.alerting.alerts import AlertPolicy
from engine.alerting.notify import Dispatcher
from engine.alerting.routing import Destination, Timing, default_routing
from engine.detection.detect import Detection
from engine.detection.ensemble import EnsembleDetector
from engine.intake.worker import SignalProcessor
from engine.ports import QueuedSignal
from engine.signal import Signal, make_signal
from storage.notify_store import NotifyStore
from storage.sqlite import SqliteRecord

T0 = 1_795_000_000.0
STEP = 60.0


class MemoryStates:
    """Detector state kept in memory (the processor's port; Redis in production)."""

    def __init__(self) -> None:
        self.saved: dict[str, bytes] = {}

    async def load(self, series: Sequence[str]) -> dict[str, bytes]:
        return {s: self.saved[s] for s in series if s in self.saved}

    async def save(self, states: Mapping[str, bytes]) -> None:
        self.saved.update(states)


def stream(
    seed: int, spikes: list[tuple[int, int, float]], am: list[tuple[int, str, str]], points: int = 160
) -> list[Signal]:
    """A noisy metric with spike episodes (start, length, height) and Alertmanager alerts, in time order."""
    rng = random.Random(seed)
    values = [rng.gauss(100.0, 4.0) for _ in range(points)]
    for start, length, height in spikes:
        for i in range(start, min(start + length, len(values))):
            values[i] = height
    signals: list[tuple[float, Signal]] = [
        (
            T0 + i * STEP,
            make_signal(series="shop.latency", value=v, ts=T0 + i * STEP, labels={"service": "shop"}),
        )
        for i, v in enumerate(values)
    ]
    for at, name, status in am:
        ts = T0 + at * STEP + 1
        signals.append(
            (
                ts,
                make_signal(
                    series=f"shop.{name}",
                    kind="alert",
                    ts=ts,
                    source="alertmanager",
                    severity="error",
                    text=f"{name} fires",
                    labels={"service": "shop", "alertname": name, "fingerprint": name, "status": status},
                ),
            )
        )
    return [s for _, s in sorted(signals, key=lambda p: p[0])]


async def record_alerts(
    signals: list[Signal], cuts: list[int], path: Path, messages: list[str] | None = None
) -> tuple[list[tuple], int]:
    """Process the stream cut at `cuts`; return the alert records and how many alerts were taken up."""
    record = await SqliteRecord.open(path)
    try:
        processor = SignalProcessor(
            record, MemoryStates(), Detection(EnsembleDetector(warmup=40)), AlertPolicy()
        )
        bounds = [0, *sorted(set(cuts)), len(signals)]
        for start, end in itertools.pairwise(bounds):
            if end > start:
                await processor.process(
                    [QueuedSignal(str(i), s, s.ts) for i, s in enumerate(signals[start:end])]
                )
        rows = await record._rows(
            "SELECT group_key, started_at, resolved_at, status, count FROM alerts "
            "ORDER BY group_key, started_at",
            (),
            "test",
        )
        store = NotifyStore(record)
        chat = Destination("telegram", "1")
        timing = Timing(group_wait=0, group_interval=0, repeat_interval=86_400, critical_skips_wait=True)
        dispatcher = Dispatcher(store, default_routing([chat], timing), clock=lambda: T0)
        told: set[str] = set()
        now = signals[-1].ts + 10
        for _ in range(3):  # a few ticks: every alert must be taken up, none twice
            for update in await dispatcher.tick(now):
                assert not (update.taken_up() & told), "an alert announced twice"
                if update.notification and messages is not None:
                    messages.append(render_text(group_reply(update.notification)))
                told.update(update.taken_up())
            now += 10
        ids = {r[0] for r in await record._rows("SELECT id FROM alerts", (), "test")}
        assert ids <= told, f"alerts never announced: {sorted(ids - told)}"
        untold = await record._rows("SELECT id FROM alerts WHERE told = 0", (), "test")
        assert not untold, "every alert taken up for good"
        return [tuple(r) for r in rows], len(ids)
    finally:
        await record.close()


episodes = st.lists(
    st.tuples(st.integers(45, 150), st.integers(1, 6), st.floats(400, 2000)), min_size=1, max_size=4
)
am_events = st.lists(
    st.tuples(
        st.integers(0, 159),
        st.sampled_from(["NodeDown", "DiskFull"]),
        st.sampled_from(["firing", "resolved"]),
    ),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    spikes=episodes,
    am=am_events,
    cuts=st.lists(st.integers(1, 170), max_size=6),
)
def test_alert_records_do_not_depend_on_batch_boundaries(
    seed: int, spikes: list[tuple[int, int, float]], am: list[tuple[int, str, str]], cuts: list[int]
) -> None:
    signals = stream(seed, spikes, am)
    with tempfile.TemporaryDirectory() as tmp:
        one_by_one, _ = asyncio.run(record_alerts(signals, list(range(1, len(signals))), Path(tmp) / "a.db"))
        batched, _ = asyncio.run(
            record_alerts(signals, [c for c in cuts if c < len(signals)], Path(tmp) / "b.db")
        )
    assert batched == one_by_one
    assert one_by_one, "the stream has spikes: at least one alert"


def test_a_backfill_in_one_batch_records_and_announces_every_episode(tmp_path: Path) -> None:
    """Three incidents posted in one request: three alerts, each announced as fired and resolved.

    They are more than the flap window (an hour) apart, so none is the same flapping episode,
    and each is stronger than the one before, so each is news.
    """
    signals = stream(
        7,
        [(60, 3, 800.0), (150, 2, 900.0), (240, 4, 1200.0)],
        [(70, "NodeDown", "firing"), (72, "NodeDown", "resolved")],
        points=300,
    )
    messages: list[str] = []
    rows, announced = asyncio.run(record_alerts(signals, [], tmp_path / "one.db", messages))
    anomaly = [r for r in rows if r[0].startswith("anomaly:")]
    assert len(anomaly) == 3 and all(r[3] == "resolved" for r in anomaly)
    external = [r for r in rows if r[0].startswith("alertmanager:")]
    assert [(r[3], r[2] - r[1]) for r in external] == [("resolved", 2 * STEP)]
    assert announced == 4
    text = "\n".join(messages)
    assert "RESOLVED" in text and "NodeDown" in text
    assert "resolved after 2 min" in text  # NodeDown fired and resolved two minutes later
