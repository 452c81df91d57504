"""SigOps' own metrics, in Prometheus' format (`GET /metrics`), so it is watched like any service.

The metrics live in one registry of this process (`REGISTRY`), with the process
collector (memory, CPU, open files). Counters and histograms are updated where the
work happens; gauges that describe shared state (the stream's backlog per shard,
series tracked) are read by the `/metrics` handler just before it answers.

Label values are bounded: a platform, an outcome, a loop's name, a field name without
its array indices, never an id or a series.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

INGEST_ACCEPTED = Counter(
    "sigops_ingest_accepted_total", "Signals accepted into the stream, by kind.", ["kind"], registry=REGISTRY
)
INGEST_REJECTED = Counter(
    "sigops_ingest_rejected_total",
    "Records refused at ingest, by the field that was wrong.",
    ["field"],
    registry=REGISTRY,
)
HTTP_REFUSED = Counter(
    "sigops_http_refused_total",
    "Requests refused as a whole (401, 413, 415, 503 …), by status.",
    ["status"],
    registry=REGISTRY,
)
STREAM_PENDING = Gauge(
    "sigops_stream_pending",
    "Entries read by a worker and not yet acknowledged, per shard.",
    ["shard"],
    registry=REGISTRY,
)
STREAM_LAG = Gauge(
    "sigops_stream_lag",
    "Entries in the stream no worker has read yet, per shard.",
    ["shard"],
    registry=REGISTRY,
)
WORKER_BATCH_SECONDS = Histogram(
    "sigops_worker_batch_seconds",
    "Time a worker took to score and record one batch.",
    buckets=_FAST,
    registry=REGISTRY,
)
WORKER_SIGNALS = Counter(
    "sigops_worker_signals_total", "Signals scored and recorded by the workers.", registry=REGISTRY
)
SERIES_TRACKED = Gauge("sigops_series_tracked", "Series in the record's catalogue.", registry=REGISTRY)
ALERT_CHANGES = Counter(
    "sigops_alert_changes_total",
    "Alert changes recorded (opened, escalated, flapping, resolved, updated).",
    ["change"],
    registry=REGISTRY,
)
DISPATCH_TICK_SECONDS = Histogram(
    "sigops_dispatch_tick_seconds",
    "Time one pass of the notification pipeline took.",
    buckets=_FAST,
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "sigops_deliveries_total",
    "Outbox deliveries by platform and outcome (sent, retry, failed).",
    ["platform", "outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "sigops_chat_rate_limited_total",
    "Answers of 429 / flood wait from a chat API.",
    ["platform"],
    registry=REGISTRY,
)
RETRY_WAIT_SECONDS = Counter(
    "sigops_delivery_retry_wait_seconds_total",
    "Seconds deliveries were told to wait before their retry.",
    ["platform"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "sigops_outbox_backlog", "Deliveries waiting to be sent (pending or sending).", registry=REGISTRY
)
LOOP_RESTARTS = Counter(
    "sigops_loop_restarts_total",
    "Background loops that failed and were restarted.",
    ["loop"],
    registry=REGISTRY,
)
LOOPS_DOWN = Gauge(
    "sigops_loops_down", "Background loops not running right now (0 is healthy).", registry=REGISTRY
)
QUESTION_SECONDS = Histogram(
    "sigops_question_seconds",
    "Time to answer one question, by how it was answered (model, retrieval-only).",
    ["mode"],
    buckets=_SLOW,
    registry=REGISTRY,
)
MODEL_FALLBACKS = Counter(
    "sigops_model_fallbacks_total",
    "Answers given without the model, by reason.",
    ["reason"],
    registry=REGISTRY,
)

_INDEX = re.compile(r"\.\d+(?=\.|$)|^\d+\.?")


def field_label(field: str) -> str:
    """`alerts.3.labels` → `alerts.labels`: a bounded label value for a rejected field."""
    return _INDEX.sub("", field)[:40] or "record"
