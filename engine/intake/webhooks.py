"""Translate other systems' webhook payloads into signal records.

Prometheus Alertmanager (webhook version 4) and Grafana alerting (the same shape,
plus `values`) become `alert` signals; change notifications become `change` signals.
A translated record still goes through `Signal` validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from engine.alerting.alerts import LINK_PREFIX, VALUE_PREFIX
from engine.errors import FieldProblem, PayloadError
from engine.intake.ingest import Unreadable
from engine.signal import MAX_LABEL_VALUE_CHARS, MAX_LABELS

# Where an alert's links are (an alert field, else an annotation), and what people see them as.
_LINK_FIELDS = (
    ("generatorURL", "source"),
    ("runbook_url", "runbook"),
    ("dashboardURL", "dashboard"),
    ("panelURL", "panel"),
    ("silenceURL", "silence"),
)
_MAX_VALUES = 4
# Alertmanager's "not set" time.
_ZERO_TIME_PREFIX = "0001-01-01"
CHANGE_TYPES = ("deploy", "rollback", "flag", "config", "scale", "migration", "other")


def from_alertmanager(payload: Any, *, source: str = "alertmanager") -> list[Any]:
    """One alert signal record per alert of an Alertmanager/Grafana webhook body, in order."""
    if not isinstance(payload, Mapping):
        raise PayloadError("expected the webhook's JSON object with an 'alerts' array")
    version = str(payload.get("version", "4"))
    if source == "alertmanager" and version != "4":
        raise PayloadError(f"Alertmanager webhook version {version!r} is not supported; expected '4'")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("field 'alerts' is missing or not an array")
    records: list[Any] = []
    for index, alert in enumerate(alerts):
        try:
            records.append(_alert_record(alert, payload, source))
        except ValueError as exc:
            records.append(Unreadable([FieldProblem(f"alerts.{index}", str(exc))]))
    return records


def _alert_record(alert: Any, payload: Mapping[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(alert, Mapping):
        raise ValueError("an alert must be an object")
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    if not isinstance(labels, Mapping) or not isinstance(annotations, Mapping):
        raise ValueError("labels and annotations must be objects")
    status = str(alert.get("status") or payload.get("status") or "firing").lower()
    if status not in ("firing", "resolved"):
        raise ValueError(f"status {status!r} is neither 'firing' nor 'resolved'")
    alertname = str(labels.get("alertname") or "alert")
    service = labels.get("service") or labels.get("job")
    fingerprint = str(alert.get("fingerprint") or _fingerprint(labels))
    starts = _time_or_none(alert.get("startsAt"))
    ends = _time_or_none(alert.get("endsAt"))
    if not labels:
        raise ValueError("an alert needs labels (at least alertname) to say what it is about")
    extras = _links(alert, annotations) + _measured(alert)
    kept = {k: v for k, v in sorted(labels.items())[: MAX_LABELS - 2 - len(extras)]}
    kept.update(status=status, fingerprint=fingerprint)
    kept.update(extras)
    text = " — ".join(str(annotations[k]) for k in ("summary", "description") if annotations.get(k))
    ts = (ends if status == "resolved" else starts) or None
    return {
        "id": hashlib.blake2b(
            f"{source}|{fingerprint}|{status}|{starts}|{ends if status == 'resolved' else ''}".encode(),
            digest_size=12,
        ).hexdigest(),
        "ts": ts,
        "source": source,
        "kind": "alert",
        "series": f"{service}.{alertname}" if service else alertname,
        "value": _value(alert, status),
        "labels": kept,
        "text": text[:8000] or None,
        "severity": labels.get("severity") or "warning",
    }


def _links(alert: Mapping[str, Any], annotations: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The alert's links, kept beside its labels: where it came from, what to do, where to look."""
    found = [(name, alert.get(field) or annotations.get(field)) for field, name in _LINK_FIELDS]
    return [
        (f"{LINK_PREFIX}{name}", url)
        for name, url in found
        if isinstance(url, str)
        and url.startswith(("http://", "https://"))
        and len(url) <= MAX_LABEL_VALUE_CHARS
    ]


def _measured(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Grafana's `values` (the query results the rule judged), at most a few."""
    values = alert.get("values")
    if not isinstance(values, Mapping):
        return []
    return [
        (f"{VALUE_PREFIX}{str(name)[:40]}", f"{value:g}")
        for name, value in list(values.items())[:_MAX_VALUES]
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


def _value(alert: Mapping[str, Any], status: str) -> float:
    values = alert.get("values")  # Grafana: {"B": 44.2, "C": 1}
    if isinstance(values, Mapping):
        for value in values.values():
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return 1.0 if status == "firing" else 0.0


def _time_or_none(raw: Any) -> str | None:
    if not raw or not isinstance(raw, str) or raw.startswith(_ZERO_TIME_PREFIX):
        return None
    return raw


def _fingerprint(labels: Mapping[str, Any]) -> str:
    canonical = ",".join(f"{k}={labels[k]}" for k in sorted(labels))
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def from_changes(records: list[Any]) -> list[Any]:
    """Change notifications (deploys, flag flips, config changes) as change signal records."""
    out: list[Any] = []
    for record in records:
        if isinstance(record, Unreadable):  # a bad NDJSON line: already refused
            out.append(record)
            continue
        problems = _change_problems(record)
        if problems:
            out.append(Unreadable(problems))
            continue
        change_type = str(record.get("type") or "deploy").lower()
        service = str(record["service"]).strip()
        version = record.get("version")
        labels = dict(record.get("labels") or {})
        labels.update(service=service, change_type=change_type)
        for key in ("version", "author", "environment", "env", "url"):
            if record.get(key) is not None:
                labels[key] = record[key]
        title = record.get("title") or record.get("description") or ""
        summary = f"{change_type} {service}" + (f" {version}" if version else "")
        out.append(
            {
                "id": record.get("id"),
                "ts": record.get("ts"),
                "source": record.get("source") or "changes",
                "kind": "change",
                "series": f"{service}.{change_type}",
                "labels": labels,
                "text": f"{summary}: {title}" if title else summary,
                "severity": "info",
            }
        )
    return out


def _change_problems(record: Any) -> list[FieldProblem]:
    if not isinstance(record, Mapping):
        return [FieldProblem("record", "a change is a JSON object")]
    problems = []
    service = record.get("service")
    if not isinstance(service, str) or not service.strip():
        problems.append(FieldProblem("service", "is required: the service that changed"))
    change_type = str(record.get("type") or "deploy").lower()
    if change_type not in CHANGE_TYPES:
        problems.append(FieldProblem("type", f"must be one of {', '.join(CHANGE_TYPES)}"))
    labels = record.get("labels")
    if labels is not None and not isinstance(labels, Mapping):
        problems.append(FieldProblem("labels", "must be an object of name: value"))
    return problems
