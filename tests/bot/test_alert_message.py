"""What an alert message says, read as the on-call person reads it (Telegram HTML, Slack blocks)."""

from __future__ import annotations

from dataclasses import replace

from bot.alert_message import LabelView, group_reply, nudge
from bot.slack_format import blocks
from bot.telegram_format import MESSAGE_LIMIT, split, units
from engine.alerting.alerts import Alert
from engine.alerting.notify import NEW_ALERTS, Notification

T0 = 1_795_000_000.0


def node_down(host: str, fp: str, **labels: str) -> Alert:
    return Alert(
        id=f"id{fp}",
        group_key=f"alertmanager:{fp}",
        status="firing",
        severity="critical",
        title="NodeDown",
        series="NodeDown",
        service="",
        source="alertmanager",
        started_at=T0,
        updated_at=T0,
        score=1.0,
        value=1.0,
        risk=0.6,
        explanation=f"{host}:9100 is down",
        labels={
            "alertname": "NodeDown",
            "instance": f"{host}:9100",
            "job": "node",
            "severity": "critical",
            "status": "firing",
            "fingerprint": fp,
            "__link.source": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
            "__link.runbook": "https://runbooks.example/node-down",
            **labels,
        },
    )


def note(
    *alerts: Alert, reason: str = "first notification", news: frozenset[str] = frozenset()
) -> Notification:
    return Notification(
        group_id="g1",
        version=1,
        reason=reason,
        receiver="default",
        group_labels={"alertname": "NodeDown"},
        alerts=alerts,
        silenced_until={},
        inhibited=frozenset(),
        flapping=frozenset(),
        created_at=T0,
        news=news,
    )


def text_of(reply_units: list[str]) -> str:
    return "\n".join(reply_units)


def test_an_alertmanager_alert_says_which_host_and_no_made_up_figures() -> None:
    reply = group_reply(note(node_down("db1", "a1")))
    html = text_of(units(reply))
    assert "instance=db1:9100, job=node" in html
    # Alertmanager sent no value, score or series worth showing; the webhook's fields are not labels.
    for meaningless in ("score", "risk", "value", "series", "fingerprint", "status="):
        assert f"<b>{meaningless}" not in html and meaningless + "=" not in html, meaningless
    assert '<a href="http://prometheus:9090/graph?g0.expr=up+%3D%3D+0">Source</a>' in html
    assert '<a href="https://runbooks.example/node-down">Runbook</a>' in html


def test_the_labels_shown_are_those_that_tell_the_alerts_apart() -> None:
    reply = group_reply(note(node_down("db1", "a1"), node_down("db2", "a2")))
    html = text_of(units(reply))
    assert "instance=db1:9100" in html and "NodeDown instance=db2:9100 — firing since" in html
    assert "job=node" not in html  # both share it: it tells nothing apart
    hidden = group_reply(
        note(node_down("db1", "a1", zone="z1")), labels=LabelView(frozenset({"job"}), ("zone",))
    )
    assert dict(hidden.fields)["labels"] == "zone=z1, instance=db1:9100"


def test_grafana_values_are_shown_as_values() -> None:
    alert = replace(
        node_down("db1", "a1"), source="grafana", labels={"alertname": "Mem", "__value.B": "44.2"}
    )
    assert dict(group_reply(note(alert)).fields)["values"] == "B=44.2"


def test_a_detected_anomaly_keeps_its_figures_once() -> None:
    alert = replace(
        node_down("db1", "a1"),
        group_key="anomaly:checkout.errors",
        title="checkout.errors unusually high",
        series="checkout.errors",
        labels={"service": "checkout"},
        explanation="checkout.errors 85, expected 14.6 (usual 3.01–26.2): 10.0σ above (counts)",
        value=101.0,
        expected=24.0,
        lower=-3.0,
        upper=37.0,
    )
    fields = dict(group_reply(note(alert)).fields)
    assert fields["series"] == "checkout.errors" and fields["score"] == "1.00, risk 0.60"
    assert "value" not in fields  # the explanation says value, expected and usual range: one set
    assert "value" in dict(group_reply(note(replace(alert, explanation=""))).fields)
    assert dict(group_reply(note(replace(alert, explanation=""))).fields)["value"] == (
        "101, expected 24 (usual 0–37)"  # a band below 0 for a count is clamped
    )


def test_a_long_explanation_leaves_state_severity_and_buttons_in_the_first_part() -> None:
    alert = replace(node_down("db1", "a1"), explanation="\n".join(["log line " + "x" * 90] * 80))
    parts = split(group_reply(note(alert)), MESSAGE_LIMIT)
    assert len(parts) > 1
    first = parts[0]
    assert "<b>state</b>" in first and "<b>severity</b>" in first and "instance=db1:9100" in first


def test_the_new_alerts_nudge_names_the_new_alert_not_the_old_top() -> None:
    old, new = node_down("db1", "a1"), replace(node_down("db2", "a2"), severity="warning")
    text = nudge(note(old, new, reason=NEW_ALERTS, news=frozenset({new.id})))
    assert text == "➕ New in this group: NodeDown instance=db2:9100"


def test_backticks_become_code_in_telegram_and_links_render_in_slack() -> None:
    alert = replace(node_down("db1", "a1"), explanation="run `systemctl status node` <now>")
    reply = group_reply(note(alert))
    assert "run <code>systemctl status node</code> &lt;now&gt;" in text_of(units(reply))
    rendered = str(blocks(reply))
    assert "<https://runbooks.example/node-down|Runbook>" in rendered


def test_lists_name_an_alertmanager_alert_by_its_labels_without_a_score() -> None:
    from bot.commands import alert_line

    alert = node_down("db2", "a2")
    assert alert.name == "NodeDown instance=db2:9100, job=node"
    line = alert_line(alert, T0 + 120)
    assert "NodeDown instance=db2:9100, job=node — open 2 min" in line and "score" not in line


def test_one_id_to_type_the_one_the_buttons_use() -> None:
    alone = group_reply(note(node_down("db1", "a1")))
    assert alone.footer.startswith("id ida1 · from alertmanager") and alone.buttons[0].action == "ack ida1"
    several = group_reply(note(node_down("db1", "a1"), node_down("db2", "a2")))
    assert several.footer.startswith("id g1 (all 2;") and several.buttons[0].action == "ack g1"
