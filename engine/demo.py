"""A demo world: four services with realistic metrics, error logs, deploys and incidents.

`history` backfills the last hours at one point a minute so the detectors are warm;
`tick` then produces one live step, with incidents injected at fixed live steps so a
demo shows alerts within a minute: a deploy followed by an error level shift on
checkout, a latency spike on payments, a slow queue-depth drift on search, and auth
requests going silent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from engine.signal import Signal, make_signal

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    name: str
    requests: float  # per minute at the daily mean
    latency_ms: float
    error_rate: float  # errors per minute


SERVICES = (
    ServiceProfile("checkout", 1200.0, 180.0, 12.0),
    ServiceProfile("payments", 800.0, 240.0, 8.0),
    ServiceProfile("auth", 3000.0, 45.0, 20.0),
    ServiceProfile("search", 2000.0, 120.0, 15.0),
)

# Live steps at which incidents start (a step is `interval` seconds of real time).
DEPLOY_STEP = 5
ERROR_SHIFT_STEP = 7
LATENCY_SPIKE_STEP = 10
DRIFT_STEP = 12
SILENCE_STEP = 20


class DemoWorld:
    """Deterministic for a seed: the same demo every time."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.queue_depth = 40.0
        self.origin: float | None = None  # the first time asked for: the daily curve starts there

    def history(self, start: float, end: float, step_s: float = 60.0) -> Iterator[list[Signal]]:
        """Backfill from `start` to `end`, one batch of signals per step."""
        ts = start
        while ts < end:
            yield self._metrics(ts, live_step=None)
            ts += step_s

    def tick(self, ts: float, step: int) -> list[Signal]:
        """One live step at time `ts`, with the incidents due at `step`."""
        signals = self._metrics(ts, live_step=step)
        if step == DEPLOY_STEP:
            signals.append(
                make_signal(
                    ts=ts,
                    source="deploys",
                    kind="change",
                    series="checkout.deploy",
                    labels={
                        "service": "checkout",
                        "change_type": "deploy",
                        "version": "v2.4",
                        "author": "ci",
                    },
                    text="deploy checkout v2.4: new payment-method picker",
                )
            )
        if step >= ERROR_SHIFT_STEP and step % 3 == 0:
            signals.append(
                make_signal(
                    ts=ts,
                    source="logs",
                    kind="log",
                    series="checkout.log",
                    severity="error",
                    labels={"service": "checkout", "logger": "cart"},
                    text="NullPointerException in PaymentMethodPicker.render (cart id redacted)",
                )
            )
        return signals

    def _metrics(self, ts: float, live_step: int | None) -> list[Signal]:
        rng = self.rng
        # The daily curve's phase counts from the demo's first point, not the wall clock, so
        # every run is the same whatever the time of day (a seed gives one demo, not one a minute).
        if self.origin is None:
            self.origin = ts
        season = 1.0 + 0.35 * math.sin(2 * math.pi * (((ts - self.origin) % DAY_S) / DAY_S + 0.2))
        out: list[Signal] = []
        for svc in SERVICES:
            if svc.name == "auth" and live_step is not None and live_step >= SILENCE_STEP:
                continue  # auth stops reporting: a silent series
            labels = {"service": svc.name, "env": "prod", "region": "eu-west-1"}
            requests = max(0.0, rng.gauss(svc.requests * season, math.sqrt(svc.requests) * 1.5))
            latency = svc.latency_ms * (1 + 0.08 * (season - 1)) * math.exp(rng.gauss(0, 0.05))
            errors = float(poisson_sample(rng, svc.error_rate * season))
            if live_step is not None:
                if svc.name == "checkout" and live_step >= ERROR_SHIFT_STEP:
                    errors = float(poisson_sample(rng, svc.error_rate * season * 6))
                if svc.name == "payments" and LATENCY_SPIKE_STEP <= live_step < LATENCY_SPIKE_STEP + 3:
                    latency *= 4.5
            out += [
                make_signal(
                    ts=ts,
                    source="demo",
                    series=f"{svc.name}.requests",
                    value=round(requests, 1),
                    labels=labels,
                ),
                make_signal(
                    ts=ts,
                    source="demo",
                    series=f"{svc.name}.latency_p99",
                    value=round(latency, 1),
                    labels=labels,
                ),
                make_signal(ts=ts, source="demo", series=f"{svc.name}.errors", value=errors, labels=labels),
            ]
        if live_step is not None and live_step >= DRIFT_STEP:
            self.queue_depth += 6.0 + rng.gauss(0, 2)  # a consumer falling behind
        else:
            self.queue_depth = 40.0 + rng.gauss(0, 3)
        out.append(
            make_signal(
                ts=ts,
                source="demo",
                series="search.queue_depth",
                value=round(self.queue_depth, 1),
                labels={"service": "search", "env": "prod", "region": "eu-west-1"},
            )
        )
        return out


def poisson_sample(rng: random.Random, lam: float) -> int:
    """Poisson sample (Knuth for small rates, normal approximation above)."""
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1
