"""Intake: how signals come in and get processed.

Owns HTTP ingest (`ingest`), the sources that push or are pulled (`webhooks` for
Alertmanager, Grafana and deploys; `pull` for Prometheus queries and HTTP probes), the
stream worker that runs detect → decide → record for each batch (`worker`), and which
worker owns which shard (`ownership`). The signal model itself is shared vocabulary
(`engine.signal`). Intake builds on detection and alerting; nothing there imports it.
"""

from engine.intake.ingest import Ingest, IngestResult, decode_body
from engine.intake.ownership import Ownership, shard_of
from engine.intake.pull import Probe, ProbeSource, PrometheusSource, PromQuery
from engine.intake.webhooks import from_alertmanager, from_changes
from engine.intake.worker import SignalProcessor, Worker, WorkerConfig

__all__ = [
    "Ingest", "IngestResult", "Ownership", "Probe", "ProbeSource", "PromQuery", "PrometheusSource",
    "SignalProcessor", "Worker", "WorkerConfig", "decode_body", "from_alertmanager", "from_changes",
    "shard_of",
]  # fmt: skip
