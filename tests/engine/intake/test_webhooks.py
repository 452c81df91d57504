"""Webhook translation, on payloads captured from a real Alertmanager 0.25 and Grafana's docs."""

from __future__ import annotations

import pytest

from engine.errors import PayloadError
from engine.intake.ingest import Unreadable
from engine.intake.webhooks import from_alertmanager, from_changes
from engine.signal import validate_batch
from tests.conftest import fixture_json


def test_alertmanager_firing_group_becomes_one_alert_signal_per_alert() -> None:
    records = from_alertmanager(fixture_json("alertmanager/firing.json"))
    signals, rejected = validate_batch(records)
    assert rejected == []
    assert [s.kind for s in signals] == ["alert", "alert"]
    first = signals[0]
    assert first.series == "payments.HighErrorRate"
    assert first.severity == "critical"
    assert first.labels["status"] == "firing"
    assert first.labels["fingerprint"] == "efb35cc2fe60627f"
    assert first.labels["instance"] == "pay-1:9100"
    assert first.text == "5xx rate above 5% on payments — error rate is 14.2% (threshold 5%)"
    assert first.when.isoformat().startswith("2026-11-22T03:58:22.017767")  # nanoseconds read


def test_one_resolved_alert_in_a_still_firing_group() -> None:
    records = from_alertmanager(fixture_json("alertmanager/one-resolved.json"))
    signals, _ = validate_batch(records)
    by_fp = {s.labels["fingerprint"]: s for s in signals}
    assert by_fp["efb35cc2fe60627f"].labels["status"] == "resolved"
    assert by_fp["efb35cc2fe60627f"].value == 0.0
    assert by_fp["da63bb81f1b066a4"].labels["status"] == "firing"


def test_a_resent_webhook_gives_the_same_ids() -> None:
    payload = fixture_json("alertmanager/firing.json")
    first, _ = validate_batch(from_alertmanager(payload))
    again, _ = validate_batch(from_alertmanager(payload))
    assert [s.id for s in first] == [s.id for s in again]
    resolved, _ = validate_batch(from_alertmanager(fixture_json("alertmanager/one-resolved.json")))
    assert resolved[0].id != first[0].id  # a state change is news


def test_grafana_values_become_the_signal_value() -> None:
    payload = {
        "receiver": "My Super Webhook",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
                "annotations": {"summary": "This alert was triggered for zone us-1"},
                "startsAt": "2021-10-12T09:51:03.157076+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
                "fingerprint": "c6eadffa33fcdf37",
                "values": {"B": 44.23943737541908, "C": 1},
            }
        ],
        "version": "1",
    }
    signals, rejected = validate_batch(from_alertmanager(payload, source="grafana"))
    assert rejected == []
    assert signals[0].source == "grafana"
    assert signals[0].value == pytest.approx(44.2394, abs=1e-3)
    assert signals[0].series == "High memory usage"
    labels = signals[0].labels
    assert labels["__value.B"] == "44.2394" and labels["__value.C"] == "1"
    assert labels["__link.source"] == "https://play.grafana.org/alerting/1afz29v7z/edit"
    assert "receiver" not in labels  # a field of the webhook, not a label of the alert


def test_links_come_with_the_alert_and_only_real_urls() -> None:
    payload = fixture_json("alertmanager/firing.json")
    payload["alerts"][1]["annotations"]["runbook_url"] = "javascript:alert(1)"
    signals, _ = validate_batch(from_alertmanager(payload))
    assert signals[0].labels["__link.source"].startswith("http://prometheus.example:9090/graph?g0.expr=")
    assert signals[0].labels["__link.runbook"] == "https://runbooks.example/payments-5xx"
    assert not any(k.startswith("__link.") for k in signals[1].labels)  # empty generatorURL, bad scheme


def test_an_alert_without_labels_is_refused_by_name() -> None:
    payload = fixture_json("alertmanager/firing.json")
    payload["alerts"][1]["labels"] = {}
    records = from_alertmanager(payload)
    assert isinstance(records[1], Unreadable)
    assert records[1].problems[0].field == "alerts.1" and "needs labels" in records[1].problems[0].message


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([], "JSON object"),
        ({"version": "4"}, "'alerts'"),
        ({"version": "3", "alerts": []}, "version '3'"),
    ],
)
def test_malformed_alertmanager_bodies_are_refused(payload: object, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        from_alertmanager(payload)


def test_a_malformed_alert_is_rejected_alone() -> None:
    payload = fixture_json("alertmanager/firing.json")
    payload["alerts"].insert(1, {"status": "pending", "labels": {}})
    records = from_alertmanager(payload)
    assert isinstance(records[1], Unreadable)
    assert "neither 'firing' nor 'resolved'" in records[1].problems[0].message


def test_changes_need_a_service_and_a_known_type() -> None:
    records = from_changes(
        [
            {"service": "checkout", "type": "deploy", "version": "v2.4", "title": "picker", "author": "ana"},
            {"type": "deploy"},
            {"service": "auth", "type": "yolo"},
        ]
    )
    signals, _ = validate_batch([r for r in records if not isinstance(r, Unreadable)])
    assert signals[0].kind == "change"
    assert signals[0].series == "checkout.deploy"
    assert signals[0].text == "deploy checkout v2.4: picker"
    assert signals[0].labels["author"] == "ana"
    assert isinstance(records[1], Unreadable) and records[1].problems[0].field == "service"
    assert isinstance(records[2], Unreadable) and records[2].problems[0].field == "type"
