"""Risk scoring: each driver shown, related changes and series named."""

from __future__ import annotations

from engine.alerting.alerts import Alert
from engine.alerting.risk import ChangeRef, assess

T0 = 1_795_000_000.0


def alert(
    series: str = "checkout.errors", severity: str = "error", score: float = 0.98, **kw: object
) -> Alert:
    fields: dict[str, object] = dict(
        id=f"id-{series}", group_key=f"anomaly:{series}", status="firing", severity=severity,
        title=f"{series} unusually high", series=series, service="checkout", source="demo",
        started_at=T0, updated_at=T0 + 300, score=score,
    )  # fmt: skip
    fields.update(kw)
    return Alert(**fields)  # type: ignore[arg-type]


DEPLOY = ChangeRef("c1", T0 - 120, "checkout", "deploy", "deploy checkout v2.4")


def test_a_deploy_just_before_and_a_second_series_raise_the_risk() -> None:
    lone = assess(alert(), T0 + 300, [], [])
    related = assess(alert(), T0 + 300, [DEPLOY], [alert(), alert("checkout.latency_p99")])
    assert related.risk > lone.risk
    assert related.changes == ("started 2 min after deploy checkout v2.4",)
    assert related.other_series == ("checkout.latency_p99",)
    drivers = {d.name: d for d in related.drivers}
    assert set(drivers) == {"magnitude", "duration", "severity", "breadth", "change", "recency"}
    assert drivers["change"].level == 1.0 and drivers["change"].text.startswith("started 2 min after deploy")
    assert drivers["breadth"].text == "1 other series of checkout anomalous"
    assert abs(sum(d.contribution for d in related.drivers) - related.risk) < 1e-9


def test_old_changes_and_later_changes_are_not_related() -> None:
    old = ChangeRef("c0", T0 - 7200, "checkout", "deploy", "deploy checkout v2.3")
    later = ChangeRef("c2", T0 + 600, "checkout", "flag", "flag checkout new-picker")
    context = assess(alert(), T0 + 300, [old, later], [])
    assert context.changes == () and {d.name: d.level for d in context.drivers}["change"] == 0.0


def test_severity_and_recency_count() -> None:
    fresh_critical = assess(alert(severity="critical"), T0 + 300, [], [])
    stale_warning = assess(alert(severity="warning"), T0 + 300 + 6 * 3600, [], [])
    assert fresh_critical.risk > stale_warning.risk
    assert 0.0 <= stale_warning.risk <= fresh_critical.risk <= 1.0
