"""The Slack front end end to end: signed requests to the real bolt AsyncApp over HTTP on 127.0.0.1,
its answers going to a fake Slack Web API (and response URLs) through the real slack-sdk."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from bot.access import Access
from bot.callbacks import CallbackSigner
from bot.commands import CommandCore
from bot.slack_app import SlackFrontEnd
from bot.slack_notify import make_client
from engine.alerting.actions import AlertActions
from engine.alerting.alerts import Alert, AlertChange
from engine.answers.answer import RetrievalAnswerer
from engine.signal import make_signal
from storage.notify_store import NotifyStore
from storage.sqlite import SqliteRecord
from tests.conftest import free_port
from tests.fakes.slack_api import FakeSlack

SECRET = "slack-signing-secret"
CHANNEL = "C0ALERTS"
SIGNER = CallbackSigner(b"s" * 32)
NOW = time.time()


@dataclass
class Rig:
    slack: FakeSlack
    store: NotifyStore
    url: str
    session: aiohttp.ClientSession

    async def post(
        self,
        body: str,
        content_type: str = "application/x-www-form-urlencoded",
        signed: bool = True,
        age_s: float = 0,
    ) -> aiohttp.ClientResponse:
        ts = str(int(time.time() - age_s))
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts}
        if signed:
            mac = hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
            headers["X-Slack-Signature"] = f"v0={mac}"
        response = await self.session.post(self.url, data=body.encode(), headers=headers)
        await response.read()
        return response

    async def command(self, text: str, user: str = "U0ANA", channel: str = CHANNEL) -> aiohttp.ClientResponse:
        body = urlencode(
            {
                "command": "/sigops",
                "text": text,
                "user_id": user,
                "user_name": user.lower()[1:],
                "channel_id": channel,
                "team_id": "T1",
                "response_url": self.slack.response_url(),
                "trigger_id": "t1",
                "token": "x",
            }
        )
        return await self.post(body)

    async def press(self, value: str, user: str = "U0ANA") -> aiohttp.ClientResponse:
        payload = {
            "type": "block_actions",
            "user": {"id": user, "name": "ana"},
            "team": {"id": "T1"},
            "channel": {"id": CHANNEL},
            "container": {"type": "message"},
            "trigger_id": "t1",
            "response_url": self.slack.response_url("b1"),
            "actions": [
                {"action_id": "sigops_0", "block_id": "sigops_actions", "value": value, "type": "button"}
            ],
        }
        return await self.post(urlencode({"payload": json.dumps(payload)}))

    async def responses(self, count: int) -> list[dict[str, Any]]:
        for _ in range(100):
            if len(self.slack.responses) >= count:
                return self.slack.responses
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.slack.responses)} responses, wanted {count}")


def text_of(response: dict[str, Any]) -> str:
    parts = [response.get("text") or ""]
    for block in response.get("blocks") or []:
        if isinstance(block.get("text"), dict):
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            if isinstance(element.get("text"), str):
                parts.append(element["text"])
    return "\n".join(parts)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    slack = await FakeSlack().start()
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    store = NotifyStore(record)
    core = CommandCore(
        record,
        RetrievalAnswerer(record),
        delivery=store,
        actions=AlertActions(store, time.time),
        chart_dir=tmp_path / "charts",
        tz=UTC,
    )
    access = Access({"slack": {CHANNEL}}, {"slack:U0ANA": "responder"})
    front = SlackFrontEnd(make_client(slack.token, slack.url), SECRET, core, access, SIGNER)
    alert = Alert(
        id="c0ffee02",
        group_key="anomaly:payments.latency",
        status="firing",
        severity="error",
        title="payments.latency unusually high",
        series="payments.latency",
        service="payments",
        source="prometheus",
        started_at=NOW - 60,
        updated_at=NOW - 60,
        score=0.9,
        value=800.0,
        expected=200.0,
    )
    points = [
        make_signal(series="payments.latency", value=200.0 + i % 5, ts=NOW - 3000 + 60 * i) for i in range(50)
    ]
    async with record.transaction() as tx:
        await tx.write_alerts([AlertChange(alert, "opened")])
        await tx.add_signals([(p, p.ts) for p in points])
    path, handler = front.events_route()
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as session:
        yield Rig(slack, store, f"http://127.0.0.1:{port}{path}", session)
    await runner.cleanup()
    await record.close()
    await slack.stop()


async def test_status_is_acked_at_once_and_answered_in_blocks(rig: Rig) -> None:
    response = await rig.command("status")
    assert response.status == 200
    [answer] = await rig.responses(1)
    assert "1 alert(s) open" in text_of(answer) and "[c0ffee02]" in text_of(answer)
    assert answer["response_type"] == "ephemeral"  # only the one who asked sees it


async def test_a_typo_stays_private_and_share_posts_to_the_channel(rig: Rig) -> None:
    await rig.command("stauts")
    await rig.command("share status")
    typo, shared = await rig.responses(2)
    assert typo["response_type"] == "ephemeral"
    assert shared["response_type"] == "in_channel" and "1 alert(s) open" in text_of(shared)


async def test_ack_needs_the_role_and_is_audited(rig: Rig) -> None:
    await rig.command("ack c0ffee02", user="U0VIC")
    await rig.command("ack c0ffee02")
    first, second = await rig.responses(2)
    assert "needs the responder role; you are viewer" in text_of(first)
    assert "ana: acknowledged payments.latency" in text_of(second)
    [entry] = await rig.store.audit_log()
    assert (entry.platform, entry.user_id, entry.action) == ("slack", "U0ANA", "ack")


async def test_bad_arguments_get_the_usage_line(rig: Rig) -> None:
    await rig.command("snooze c0ffee02")
    [answer] = await rig.responses(1)
    assert "snooze needs an alert id and a duration" in text_of(answer) and "Usage: snooze" in text_of(answer)


async def test_unsigned_and_stale_requests_are_rejected(rig: Rig) -> None:
    body = urlencode(
        {
            "command": "/sigops",
            "text": "status",
            "user_id": "U0ANA",
            "channel_id": CHANNEL,
            "response_url": rig.slack.response_url(),
        }
    )
    assert (await rig.post(body, signed=False)).status == 401
    assert (await rig.post(body, age_s=600)).status == 401  # replayed ten minutes later
    await asyncio.sleep(0.2)
    assert rig.slack.responses == []


async def test_an_unlisted_channel_gets_a_polite_private_refusal(rig: Rig) -> None:
    response = await rig.command("status", channel="C0RANDOM")
    body = await response.text()
    assert response.status == 200 and "not set up for SigOps" in body and "payments" not in body
    await asyncio.sleep(0.2)
    assert rig.slack.responses == []


async def test_buttons_are_verified_and_run_as_the_presser(rig: Rig) -> None:
    await rig.press("ack c0ffee02|forgedforged")
    await rig.press(SIGNER.sign("ack c0ffee02"))
    forged, real = await rig.responses(2)
    assert "not made by SigOps" in forged["text"]
    assert "acknowledged payments.latency" in real["text"] and real["response_type"] == "ephemeral"
    [alert] = await rig.store.find_alerts("c0ffee02")
    assert alert.acked_by == "ana (slack)"


async def test_a_question_shows_thinking_then_the_answer(rig: Rig) -> None:
    response = await rig.command("what happened on payments?")
    assert "Thinking" in await response.text()
    [answer] = await rig.responses(1)
    assert "payments" in text_of(answer) and answer.get("replace_original") is True


async def test_mention_answers_in_a_thread(rig: Rig) -> None:
    event = {
        "type": "event_callback",
        "team_id": "T1",
        "api_app_id": "A1",
        "event_id": "Ev1",
        "event_time": int(NOW),
        "event": {
            "type": "app_mention",
            "user": "U0ANA",
            "channel": CHANNEL,
            "ts": "1700000000.000100",
            "text": "<@UBOT> silences",
        },
    }
    # The mention's own message, so the fake can thread under it.
    rig.slack.channels[CHANNEL].append(
        __import__("tests.fakes.slack_api", fromlist=["SlackMessage"]).SlackMessage(
            CHANNEL, "1700000000.000100", "<@UBOT> silences", []
        )
    )
    assert (await rig.post(json.dumps(event), content_type="application/json")).status == 200
    for _ in range(100):
        if rig.slack.method_calls("chat.update"):
            break
        await asyncio.sleep(0.05)
    [thinking] = rig.slack.messages(CHANNEL)[0].replies
    assert thinking.text == "No active silences."


async def test_chart_is_uploaded(rig: Rig) -> None:
    await rig.command("chart payments.latency 2h")
    await rig.responses(1)
    for _ in range(100):
        if any(rig.slack.uploads.values()):
            break
        await asyncio.sleep(0.05)
    assert any(data.startswith(b"\x89PNG") for data in rig.slack.uploads.values())
