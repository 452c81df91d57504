"""Alert decisions: open once, update quietly, escalate, flap once, resolve when the episode closes."""

from __future__ import annotations

from engine.alerting.alerts import AlertPolicy, decide
from engine.detection.detect import Anomaly, Observation, Transition
from engine.intake.webhooks import from_alertmanager
from engine.signal import make_signal, validate_batch
from tests.conftest import fixture_json

T0 = 1_795_000_000.0
POLICY = AlertPolicy()


def observation(
    i: int,
    score: float | None,
    transition: Transition = None,
    flapping: bool = False,
    series: str = "pay.latency",
) -> Observation:
    signal = make_signal(series=series, value=900.0 if score else 200.0, ts=T0 + 60 * i)
    anomaly = None
    if score is not None:
        anomaly = Anomaly(
            id=f"{signal.id}:robust_z",
            signal_id=signal.id,
            ts=signal.ts,
            series=series,
            service="pay",
            value=900.0,
            expected=200.0,
            lower=170.0,
            upper=230.0,
            score=score,
            detectors=("robust_z",),
            explanation=f"{series} 900 vs expected 200±30, 70σ above",
        )
    return Observation(signal, None, anomaly, transition, flapping, open=transition != "closed")


def test_first_anomaly_opens_an_alert_and_more_points_only_update_it() -> None:
    changes = decide([observation(0, 0.9, "opened"), observation(1, 0.92)], [], {}, POLICY)
    assert [c.change for c in changes] == ["opened"]
    alert = changes[0].alert
    assert alert.status == "firing" and alert.count == 2 and alert.score == 0.92
    assert alert.severity == "warning"

    later = decide([observation(2, 0.91)], [], {alert.group_key: alert}, POLICY)
    assert [(c.change, c.newsworthy) for c in later] == [("updated", False)]
    assert later[0].alert.id == alert.id and later[0].alert.version == alert.version + 1


def test_a_much_stronger_anomaly_escalates() -> None:
    opened = decide([observation(0, 0.8, "opened")], [], {}, POLICY)[0].alert
    changes = decide([observation(1, 0.999)], [], {opened.group_key: opened}, POLICY)
    assert changes[0].change == "escalated" and changes[0].newsworthy
    assert changes[0].alert.severity == "error"


def test_the_alert_resolves_when_the_episode_closes() -> None:
    opened = decide([observation(0, 0.9, "opened")], [], {}, POLICY)[0].alert
    current = {opened.group_key: opened}
    assert decide([observation(1, None)], [], current, POLICY) == []  # calm, still in the episode
    resolved = decide([observation(2, None, "closed")], [], current, POLICY)
    assert [c.change for c in resolved] == ["resolved"]
    assert resolved[0].alert.resolved_at == T0 + 120


def test_a_flapping_episode_is_announced_once_as_flapping() -> None:
    changes = decide([observation(0, 0.9, "opened", flapping=True)], [], {}, POLICY)
    assert [(c.change, c.newsworthy) for c in changes] == [("flapping", True)]
    alert = changes[0].alert
    assert alert.flapping and alert.title == "pay.latency flapping"
    later = decide([observation(1, 0.92, flapping=True)], [], {alert.group_key: alert}, POLICY)
    assert [(c.change, c.newsworthy) for c in later] == [("updated", False)]


def test_alertmanager_firing_then_resolved() -> None:
    firing, _ = validate_batch(from_alertmanager(fixture_json("alertmanager/firing.json")))
    opened = decide([], firing, {}, POLICY)
    assert [c.change for c in opened] == ["opened", "opened"]
    assert {c.alert.title for c in opened} == {"HighErrorRate"}
    assert {c.alert.severity for c in opened} == {"critical"}
    current = {c.alert.group_key: c.alert for c in opened}

    assert decide([], firing, current, POLICY) == []  # a repeat is not news

    later, _ = validate_batch(from_alertmanager(fixture_json("alertmanager/one-resolved.json")))
    changes = decide([], later, current, POLICY)
    assert [(c.alert.labels["instance"], c.change) for c in changes] == [("pay-1:9100", "resolved")]
