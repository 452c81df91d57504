"""Alerts: what people are told about, opened from anomalies or from incoming alerts.

`decide` is pure: given the anomalies and alert signals of a batch, the calm series,
and the alerts already open for the keys involved, it returns the alert changes to
record and announce. Grouping, silences and chat delivery build on these records.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from engine.detection.detect import Anomaly, Observation
from engine.signal import SEVERITY_RANK, Signal
from engine.text import duration

AlertStatus = Literal["firing", "resolved"]
Change = Literal["opened", "updated", "escalated", "flapping", "resolved"]
NEW: frozenset[Change] = frozenset({"opened", "flapping"})  # the changes an alert can start with


# Sources that group and wait before they send (their alerts are resolved there, not here).
UPSTREAM_SOURCES = frozenset({"alertmanager", "grafana"})
# Labels an alert signal uses to say what it is (its state, its identity upstream), not what it
# is about: never shown to people, never grouped on.
META_LABELS = frozenset({"status", "fingerprint"})
# Label names starting with this carry what came with an alert but is not a label of it:
# links (`__link.runbook`) and measured values (`__value.B`). Prometheus reserves `__` names, so
# no real label collides.
ANNOTATION_PREFIX = "__"
LINK_PREFIX = "__link."
VALUE_PREFIX = "__value."


# Labels that most often say which machine or workload an alert is about, shown first.
_NAMING_ORDER = {name: i for i, name in enumerate(("instance", "host", "pod", "node", "namespace", "job"))}


def own_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that say what an alert is about (no meta labels, no annotations)."""
    return {k: v for k, v in labels.items() if k not in META_LABELS and not k.startswith(ANNOTATION_PREFIX)}


def alert_links(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, url) of the links that came with an alert, in the order they were given."""
    return [(k[len(LINK_PREFIX) :], v) for k, v in labels.items() if k.startswith(LINK_PREFIX)]


def alert_values(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, value) measured by the alerting system (Grafana's `values`: B=44.2)."""
    return [(k[len(VALUE_PREFIX) :], v) for k, v in labels.items() if k.startswith(VALUE_PREFIX)]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: an anomalous series, or an alert raised by another system."""

    id: str  # short, for people to type (`ack 3f9a2c1b`)
    group_key: str
    status: AlertStatus
    severity: str
    title: str
    series: str
    service: str
    source: str
    started_at: float
    updated_at: float
    resolved_at: float | None = None
    score: float = 0.0
    value: float | None = None
    expected: float | None = None
    lower: float | None = None
    upper: float | None = None
    explanation: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    count: int = 1
    version: int = 1
    flapping: bool = False
    risk: float = 0.0
    context: Mapping[str, Any] = field(default_factory=dict)  # risk drivers, related changes and series
    acked_by: str | None = None  # "platform:user name" of who acknowledged it
    acked_at: float | None = None
    snoozed_until: float | None = None  # no reminders before this
    resolved_by: str | None = None  # set when a person resolved it, not the signals
    note: str = ""  # resolution note

    @property
    def name(self) -> str:
        """The title, and for an alert from elsewhere the labels that say which one it is:
        "NodeDown instance=db2:9100, job=node" (two NodeDowns are told apart in lists)."""
        if self.detected:
            return self.title
        telling = [
            (k, v)
            for k, v in own_labels(self.labels).items()
            if k not in ("alertname", "severity", "service")
        ]
        telling.sort(key=lambda kv: (_NAMING_ORDER.get(kv[0], len(_NAMING_ORDER)), kv[0]))
        shown = ", ".join(f"{k}={v}" for k, v in telling[:3])
        return f"{self.title} {shown}" if shown else self.title

    @property
    def detected(self) -> bool:
        """Opened by SigOps' own detection (it has a score, an expected value and a band); else
        raised by another system (Alertmanager, Grafana, an API client), whose figures are its own."""
        return self.group_key.startswith("anomaly:")


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert as it now is, and what happened to it."""

    alert: Alert
    change: Change

    @property
    def newsworthy(self) -> bool:
        """Whether people should be told: a more-of-the-same update is only recorded."""
        return self.change != "updated"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How severe anomaly alerts are (when they open and close is `Hysteresis`'s call), and which
    incoming alerts are heartbeats."""

    error_score: float = 0.95  # score from which an anomaly alert is an error, not a warning
    # Alertnames of always-firing heartbeat alerts (Alertmanager's Watchdog): recorded as
    # heartbeats for the dead-man's switch, never announced as alerts.
    heartbeats: frozenset[str] = frozenset()


def anomaly_key(series: str) -> str:
    return f"anomaly:{series}"


def external_key(signal: Signal) -> str:
    """Group key of an alert raised elsewhere: its fingerprint, else series + labels."""
    fingerprint = signal.labels.get("fingerprint")
    if fingerprint:
        return f"{signal.source}:{fingerprint}"
    labels = ",".join(f"{k}={v}" for k, v in sorted(own_labels(signal.labels).items()))
    return f"{signal.source}:{signal.series}{{{labels}}}"


def short_id(group_key: str, started_at: float) -> str:
    return hashlib.blake2b(f"{group_key}@{started_at:.6f}".encode(), digest_size=4).hexdigest()


def keys_involved(observations: Sequence[Observation], alert_signals: Sequence[Signal]) -> list[str]:
    """The group keys whose open alerts `decide` needs to see."""
    keys = {anomaly_key(o.signal.series) for o in observations if o.anomaly or o.transition}
    keys.update(external_key(s) for s in alert_signals)
    return sorted(keys)


def decide(
    observations: Sequence[Observation],
    alert_signals: Sequence[Signal],
    open_alerts: Mapping[str, Alert],
    policy: AlertPolicy,
) -> list[AlertChange]:
    """The alert changes this batch causes, one per alert, in the order they happened.

    The result does not depend on how the stream was cut into batches: an alert that
    opened and resolved within this batch is still one record (status resolved), and a
    series that opened twice here gives two alerts.
    """
    current = dict(open_alerts)
    changes: dict[str, AlertChange] = {}  # by alert id
    events: list[tuple[float, int, Observation | Signal]] = [
        (o.signal.ts, i, o) for i, o in enumerate(observations)
    ]
    events += [(s.ts, len(observations) + i, s) for i, s in enumerate(alert_signals)]
    for _, _, event in sorted(events, key=lambda e: (e[0], e[1])):
        if isinstance(event, Observation):
            change = _from_observation(event, current, policy)
        else:
            change = _from_alert_signal(event, current)
        if change is None:
            continue
        current[change.alert.group_key] = change.alert
        previous = changes.get(change.alert.id)
        # Opened then updated in one batch is still news of an opening.
        if previous is not None and previous.change in NEW and change.change != "resolved":
            change = AlertChange(change.alert, previous.change)
        changes[change.alert.id] = change
    return list(changes.values())


def _from_observation(
    obs: Observation, current: Mapping[str, Alert], policy: AlertPolicy
) -> AlertChange | None:
    key = anomaly_key(obs.signal.series)
    alert = current.get(key)
    alive = alert is not None and alert.status != "resolved"
    anomaly = obs.anomaly
    if obs.transition == "closed":
        return resolution(alert, obs.signal.ts, obs.signal.value) if alive and alert else None
    if anomaly is None:
        return None
    severity = _anomaly_severity(anomaly, obs.signal.severity, policy)
    if not alive:
        return AlertChange(
            Alert(
                id=short_id(key, anomaly.ts),
                group_key=key,
                status="firing",
                severity=severity,
                title=_anomaly_title(anomaly, obs.flapping),
                series=anomaly.series,
                service=anomaly.service,
                source=obs.signal.source,
                started_at=anomaly.ts,
                updated_at=anomaly.ts,
                score=anomaly.score,
                value=anomaly.value,
                expected=anomaly.expected,
                lower=anomaly.lower,
                upper=anomaly.upper,
                explanation=anomaly.explanation,
                labels=dict(anomaly.labels),
                flapping=obs.flapping,
            ),
            "flapping" if obs.flapping else "opened",
        )
    assert alert is not None
    stronger = anomaly.score > alert.score
    escalated = SEVERITY_RANK[severity] > SEVERITY_RANK[alert.severity]
    started_flapping = obs.flapping and not alert.flapping
    return AlertChange(
        replace(
            alert,
            updated_at=anomaly.ts,
            value=anomaly.value,
            expected=anomaly.expected,
            lower=anomaly.lower,
            upper=anomaly.upper,
            score=max(alert.score, anomaly.score),
            severity=severity if escalated else alert.severity,
            explanation=anomaly.explanation if stronger else alert.explanation,
            count=alert.count + 1,
            version=alert.version + 1,
            flapping=alert.flapping or obs.flapping,
            title=_anomaly_title(anomaly, True) if started_flapping else alert.title,
        ),
        "flapping" if started_flapping else "escalated" if escalated else "updated",
    )


def _from_alert_signal(signal: Signal, current: Mapping[str, Alert]) -> AlertChange | None:
    key = external_key(signal)
    alert = current.get(key)
    alive = alert is not None and alert.status != "resolved"
    if signal.labels.get("status", "firing") == "resolved":
        return resolution(alert, signal.ts, alert.value) if alive and alert else None
    if alive:
        assert alert is not None
        if alert.severity == signal.severity and alert.explanation == (signal.text or ""):
            return None  # a repeat of what we already know
        escalated = SEVERITY_RANK[signal.severity] > SEVERITY_RANK[alert.severity]
        return AlertChange(
            replace(
                alert,
                severity=signal.severity,
                explanation=signal.text or alert.explanation,
                updated_at=signal.ts,
                count=alert.count + 1,
                version=alert.version + 1,
            ),
            "escalated" if escalated else "updated",
        )
    return AlertChange(
        Alert(
            id=short_id(key, signal.ts),
            group_key=key,
            status="firing",
            severity=signal.severity,
            title=signal.labels.get("alertname") or signal.series,
            series=signal.series,
            service=_external_service(signal),
            source=signal.source,
            started_at=signal.ts,
            updated_at=signal.ts,
            score=1.0,
            value=signal.value,
            explanation=signal.text or "",
            labels=dict(signal.labels),
        ),
        "opened",
    )


def _external_service(signal: Signal) -> str:
    """The service an incoming alert is about: its `service` (or Prometheus' `job`) label.

    An alert with neither (NodeDown on a host) is about no service: its name must not turn
    into one in `/status`, the brief or answers."""
    labels = signal.labels
    if labels.get("service") or labels.get("job"):
        return labels.get("service") or labels["job"]
    return signal.service if "." in signal.series else ""


def resolution(alert: Alert, ts: float, value: float | None = None) -> AlertChange:
    """The alert resolved at `ts` (its next version)."""
    return AlertChange(
        replace(
            alert, status="resolved", resolved_at=ts, updated_at=ts, value=value, version=alert.version + 1
        ),
        "resolved",
    )


def _anomaly_severity(anomaly: Anomaly, declared: str, policy: AlertPolicy) -> str:
    derived = "error" if anomaly.score >= policy.error_score else "warning"
    return max(derived, declared, key=SEVERITY_RANK.__getitem__)


def _anomaly_title(anomaly: Anomaly, flapping: bool = False) -> str:
    if "silence" in anomaly.detectors:
        return f"{anomaly.series} stopped reporting"
    if flapping:
        return f"{anomaly.series} flapping"
    direction = "high" if anomaly.value > anomaly.expected else "low"
    shape = "shifted" if "shift" in anomaly.detectors else "unusually"
    return f"{anomaly.series} {shape} {direction}"


def last_time_line(last: Mapping[str, object], now: float) -> str:
    """How the most similar past alert ended, cited by its id (the alert's `context["last_time"]`):
    "Last time (3 days ago): resolved by lena.m after 25 min: 'rolled back auth' [3f9a2c1b]".
    A past alert that is only alike by its title is named: "Similar before (checkout.latency_p99
    unusually high, 3 days ago): …"."""
    started = float(str(last.get("started_at") or now))
    ended = float(str(last.get("resolved_at") or started))
    ago, lasted = duration(max(0.0, now - started)), duration(max(0.0, ended - started))
    who, note = str(last.get("resolved_by") or ""), str(last.get("note") or "")
    cite = f" [{last.get('id')}]"
    when = (
        f"Similar before ({last.get('name') or last.get('title')}, {ago} ago)"
        if last.get("similar")
        else f"Last time ({ago} ago)"
    )
    if not who:
        return f"{when} it ended by itself after {lasted}{cite}"
    said = f": '{note}'" if note else ""
    return f"{when}: resolved by {who} after {lasted}{said}{cite}"


# Words every detected alert's title has: they say nothing about which alert it is.
_TITLE_NOISE = frozenset(
    "unusually high low shifted up down drifting silent stopped reporting is the a an on for of in "
    "and firing resolved alert".split()
)
SIMILAR_TITLES = 0.5  # share of distinctive title words two alerts must have in common


def title_words(title: str) -> frozenset[str]:
    """The words of an alert title that tell it apart (payments, latency, p99, nodedown, db1)."""
    return frozenset(w for w in re.findall(r"[a-z0-9]+", title.lower()) if w not in _TITLE_NOISE)


def title_similarity(a: str, b: str) -> float:
    """How alike two alert titles are: shared distinctive words over all of them (Jaccard).
    The same words (DiskFull and DiskFull, on another service) are alike; otherwise one word
    in common is a coincidence and counts for nothing."""
    left, right = title_words(a), title_words(b)
    if left and left == right:
        return 1.0
    shared = len(left & right)
    return shared / len(left | right) if shared >= 2 else 0.0
