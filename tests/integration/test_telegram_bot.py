"""The Telegram front end end to end: the real python-telegram-bot polling a fake Bot API on 127.0.0.1.

Updates are queued on the fake server's getUpdates; what the bot says comes back as
sendMessage / editMessageText / answerCallbackQuery calls on the same fake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.access import Access
from bot.callbacks import CallbackSigner
from bot.commands import CommandCore
from bot.slack_notify import SlackNotifier, make_client
from bot.telegram_bot import TelegramFrontEnd
from bot.telegram_notify import TelegramNotifier, make_bot
from engine.alerting.actions import AlertActions
from engine.alerting.alerts import Alert, AlertChange
from engine.alerting.delivery import Deliverer
from engine.alerting.notify import Dispatcher
from engine.alerting.routing import Destination, Timing, default_routing
from engine.alerting.throttle import ChatThrottle, Limits
from engine.answers.answer import RetrievalAnswerer
from engine.signal import make_signal
from storage.notify_store import NotifyStore
from storage.sqlite import SqliteRecord
from tests.conftest import free_port
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

CHAT = -5005
CHANNEL = "C0ALERTS"
ANA = {"id": 42, "is_bot": False, "first_name": "Ana", "username": "ana"}
VIC = {"id": 7, "is_bot": False, "first_name": "Vic"}
SIGNER = CallbackSigner(b"s" * 32)
NOW = time.time()
NO_LIMITS = Limits(0.0, 1000, 1000)  # the rate limits have their own tests


@dataclass
class Bot:
    telegram: FakeTelegram
    slack: FakeSlack
    record: SqliteRecord
    store: NotifyStore
    dispatcher: Dispatcher
    deliverer: Deliverer
    front: TelegramFrontEnd
    alert: Alert

    def say(self, text: str, user: dict[str, Any] = ANA, chat: int = CHAT, **extra: Any) -> None:
        entities = (
            [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
            if text.startswith("/")
            else []
        )
        chat_json = {"id": chat, "type": "group" if chat < 0 else "private", "title": "ops"}
        self.telegram.push_update(
            {
                "message": {
                    "message_id": 9000 + len(self.telegram.updates),
                    "date": int(time.time()),
                    "chat": chat_json,
                    "from": user,
                    "text": text,
                    "entities": entities,
                    **extra,
                }
            }
        )

    def press(self, data: str, user: dict[str, Any] = ANA) -> None:
        message = {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": CHAT, "type": "group", "title": "ops"},
            "text": "alert",
        }
        self.telegram.push_update(
            {
                "callback_query": {
                    "id": f"cq{len(self.telegram.updates)}",
                    "from": user,
                    "chat_instance": "ci",
                    "data": data,
                    "message": message,
                }
            }
        )

    async def sent(self, count: int, method: str = "sendMessage", chat: int = CHAT) -> list[dict[str, Any]]:
        """Wait until `count` calls of `method` reached `chat`; return them all."""
        for _ in range(100):
            calls = [c for c in self.telegram.method_calls(method) if int(c.get("chat_id", CHAT)) == chat]
            if len(calls) >= count:
                return calls
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{method} to {chat}: {len(calls)} calls, wanted {count}: {self.telegram.calls[-5:]}"
        )

    async def deliver(self) -> None:
        await self.dispatcher.tick(time.time())
        await self.deliverer.step()


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    telegram = await FakeTelegram().start()
    slack = await FakeSlack().start()
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    store = NotifyStore(record)
    ptb = make_bot(telegram.token, telegram.url, timeout_s=5)
    notifiers = {
        "telegram": TelegramNotifier(ptb, SIGNER, pace_s=0),
        "slack": SlackNotifier(make_client(slack.token, slack.url), SIGNER),
    }
    deliverer = Deliverer(
        store,
        notifiers,
        {"telegram": ChatThrottle(NO_LIMITS), "slack": ChatThrottle(NO_LIMITS)},
        time.time,
    )
    timing = Timing(0, 0, 3600, True)
    dispatcher = Dispatcher(
        store,
        default_routing([Destination("telegram", str(CHAT)), Destination("slack", CHANNEL)], timing),
        time.time,
    )
    core = CommandCore(
        record,
        RetrievalAnswerer(record),
        delivery=store,
        actions=AlertActions(store, time.time, dispatcher.wake),
        chart_dir=tmp_path / "charts",
        tz=UTC,
    )
    access = Access({"telegram": {str(CHAT)}}, {"telegram:42": "responder"})
    front = TelegramFrontEnd(ptb, core, access, SIGNER, poll_interval_s=0.0, webhook_secret="hook-secret")
    alert = Alert(
        id="c0ffee01",
        group_key="anomaly:checkout.latency",
        status="firing",
        severity="error",
        title="checkout.latency unusually high",
        series="checkout.latency",
        service="checkout",
        source="prometheus",
        started_at=NOW - 120,
        updated_at=NOW - 120,
        score=0.93,
        value=900.0,
        expected=200.0,
        lower=170.0,
        upper=230.0,
    )
    points = [
        make_signal(series="checkout.latency", value=200.0 + i % 7, ts=NOW - 3000 + 60 * i) for i in range(50)
    ]
    async with record.transaction() as tx:
        await tx.write_alerts([AlertChange(alert, "opened")])
        await tx.add_signals([(p, p.ts) for p in points])
    rig = Bot(telegram, slack, record, store, dispatcher, deliverer, front, alert)
    await rig.deliver()  # the alert's message, with its buttons, in both chats
    stop = asyncio.Event()
    await front.start(stop)
    yield rig
    stop.set()
    await front.stop()
    await record.close()
    await telegram.stop()
    await slack.stop()


async def test_commands_are_registered_and_status_answers(bot: Bot) -> None:
    [registered] = bot.telegram.method_calls("setMyCommands")
    names = {c["command"] for c in registered["commands"]}
    assert {"status", "ack", "resolve", "silence", "snooze", "ask", "brief", "chart", "whoami"} <= names
    bot.say("/status")
    replies = await bot.sent(2)  # the alert message, then the answer
    assert "1 alert(s) open" in replies[-1]["text"] and "[c0ffee01]" in replies[-1]["text"]


async def test_ack_by_a_responder_is_audited_and_edits_both_chats(bot: Bot) -> None:
    bot.say("/ack c0ffee01")
    replies = await bot.sent(2)
    assert "Ana: acknowledged checkout.latency" in replies[-1]["text"]
    [entry] = await bot.store.audit_log()
    assert (entry.user_name, entry.action, entry.before, entry.after) == (
        "Ana",
        "ack",
        "firing",
        "firing, acked by Ana (telegram)",
    )
    await bot.deliver()
    [tg_alert] = [m for m in bot.telegram.chat(CHAT) if "checkout.latency" in m.text and m.message_id == 1]
    assert "acknowledged by Ana (telegram)" in tg_alert.text
    [slack_alert] = bot.slack.messages(CHANNEL)
    assert "acknowledged by Ana (telegram)" in slack_alert.all_text()


async def test_a_viewer_may_not_ack(bot: Bot) -> None:
    bot.say("/ack c0ffee01", user=VIC)
    replies = await bot.sent(2)
    assert "ack needs the responder role; you are viewer" in replies[-1]["text"]
    [alert] = await bot.store.find_alerts("c0ffee01")
    assert alert.acked_by is None


async def test_bad_arguments_get_the_usage_line(bot: Bot) -> None:
    bot.say("/silence service=payments")
    bot.say("/snooze c0ffee01 soon")
    replies = await bot.sent(3)
    assert (
        "silence needs matchers" in replies[1]["text"]
        and "Usage: silence &lt;matchers|alert&gt;" in replies[1]["text"]
    )
    assert "'soon' is not a duration" in replies[2]["text"]


async def test_silence_silences_and_unsilence_lists_then_ends(bot: Bot) -> None:
    bot.say('/silence service="checkout" 2h planned failover')
    replies = await bot.sent(2)
    assert 'Silenced service="checkout" for 2 h' in replies[-1]["text"]
    silence_id = replies[-1]["text"].rsplit("silence ", 1)[1].split(")")[0]
    bot.say("/silences")
    listed = (await bot.sent(3))[-1]["text"]
    assert silence_id in listed and "planned failover" in listed and "by Ana (telegram)" in listed
    bot.say(f"/unsilence {silence_id}")
    assert f"Silence {silence_id}" in (await bot.sent(4))[-1]["text"]


async def test_an_unlisted_chat_gets_one_polite_refusal_and_no_data(bot: Bot) -> None:
    bot.say("/status", chat=-6006)
    bot.say("what spiked?", chat=-6006)
    refusals = await bot.sent(1, chat=-6006)
    await asyncio.sleep(0.4)
    refusals = [c for c in bot.telegram.method_calls("sendMessage") if int(c["chat_id"]) == -6006]
    assert len(refusals) == 1 and "not set up for SigOps" in refusals[0]["text"]
    assert "checkout" not in refusals[0]["text"]


async def test_a_forged_button_is_refused_and_changes_nothing(bot: Bot) -> None:
    bot.press("ack c0ffee01|AAAAAAAAAAA")
    for _ in range(100):
        if bot.telegram.answered:
            break
        await asyncio.sleep(0.05)
    assert "not made by SigOps" in bot.telegram.answered[0]["text"]
    [alert] = await bot.store.find_alerts("c0ffee01")
    assert alert.acked_by is None


async def test_the_alert_ack_button_acks_as_the_presser(bot: Bot) -> None:
    [first] = [m for m in bot.telegram.chat(CHAT) if m.message_id == 1]
    ack = first.reply_markup["inline_keyboard"][0][0]["callback_data"]  # type: ignore[index]
    bot.press(ack)
    for _ in range(100):
        if bot.telegram.answered:
            break
        await asyncio.sleep(0.05)
    assert "Ana: acknowledged" in bot.telegram.answered[0]["text"]
    [alert] = await bot.store.find_alerts("c0ffee01")
    assert alert.acked_by == "Ana (telegram)"


async def test_questions_in_a_group_need_a_mention_and_get_a_thinking_message(bot: Bot) -> None:
    bot.say("did anyone see the game?")
    bot.say("@sigops_test_bot what happened on checkout?")
    thinking = await bot.sent(2)
    assert thinking[-1]["text"] == "🤔 Thinking…"
    edits = await bot.sent(1, method="editMessageText")
    assert "checkout" in edits[-1]["text"] and "retrieval-only" in edits[-1]["text"]
    assert len(bot.telegram.method_calls("sendMessage")) == 2  # the chatter got no answer


async def test_chart_comes_as_a_photo(bot: Bot) -> None:
    bot.say("/chart checkout.lat 2h")
    [photo] = await bot.sent(1, method="sendPhoto")
    assert photo["photo_bytes"].startswith(b"\x89PNG") and "checkout.latency, last 2 h" in photo["caption"]


async def test_whoami_and_resolve_with_note(bot: Bot) -> None:
    bot.say("/whoami", user=VIC)
    assert "telegram:7" in (await bot.sent(2))[-1]["text"]
    bot.say("/resolve c0ffee01 rolled back the deploy")
    assert "resolved checkout.latency" in (await bot.sent(3))[-1]["text"]
    [alert] = await bot.store.find_alerts("c0ffee01")
    assert (alert.status, alert.resolved_by, alert.note) == (
        "resolved",
        "Ana (telegram)",
        "rolled back the deploy",
    )


async def test_webhook_checks_the_secret_token(bot: Bot) -> None:
    from aiohttp import web

    path, handler = bot.front.webhook_route()
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    update = {
        "update_id": 777,
        "message": {
            "message_id": 5,
            "date": int(time.time()),
            "text": "/whoami",
            "chat": {"id": CHAT, "type": "group"},
            "from": ANA,
            "entities": [{"type": "bot_command", "offset": 0, "length": 7}],
        },
    }
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}{path}"
        async with session.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as r:
            assert r.status == 401
        async with session.post(
            url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "hook-secret"}
        ) as r:
            assert r.status == 200
    assert "telegram:42" in (await bot.sent(2))[-1]["text"]
    await runner.cleanup()
