"""Delivery through the real python-telegram-bot and slack-sdk clients to fake chat APIs on 127.0.0.1.

The pipeline runs on a real SQLite record with a fixed clock; the chat APIs are local
aiohttp servers shaped like Telegram's Bot API and Slack's Web API.
"""

from __future__ import annotations

import html.parser
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bot.callbacks import CallbackSigner
from bot.slack_notify import SlackNotifier, make_client
from bot.telegram_notify import TelegramNotifier, make_bot
from engine.alerting.alerts import Alert, AlertChange
from engine.alerting.delivery import Deliverer, DeliveryConfig
from engine.alerting.notify import Dispatcher
from engine.alerting.routing import Destination, Timing, default_routing
from engine.alerting.throttle import SLACK_LIMITS, TELEGRAM_LIMITS, ChatThrottle
from engine.detection.detect import Anomaly
from engine.signal import make_signal
from storage.notify_store import NotifyStore
from storage.sqlite import SqliteRecord
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

T0 = 1_795_000_000.0
CHAT = -1001
CHANNEL = "C0ALERTS"
TIMING = Timing(group_wait=0, group_interval=30, repeat_interval=3600, critical_skips_wait=True)
SIGNER = CallbackSigner(b"0123456789abcdef0123456789abcdef")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    record: SqliteRecord
    store: NotifyStore
    dispatcher: Dispatcher
    deliverer: Deliverer
    clock: Clock
    telegram: FakeTelegram
    slack: FakeSlack

    async def put(self, alert: Alert, change: str = "opened") -> None:
        async with self.record.transaction() as tx:
            await tx.write_alerts([AlertChange(alert, change)])  # type: ignore[arg-type]

    async def run(self, advance: float = 0.0) -> int:
        """Move the clock, tick the pipeline, run one delivery step."""
        self.clock.now += advance
        await self.dispatcher.tick(self.clock.now)
        return await self.deliverer.step()

    async def statuses(self) -> list[str]:
        rows = await self.record._rows("SELECT status FROM deliveries ORDER BY id", (), "test")
        return [r[0] for r in rows]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    telegram = await FakeTelegram().start()
    slack = await FakeSlack().start()
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    store = NotifyStore(record)
    clock = Clock()
    bot = make_bot(telegram.token, telegram.url, timeout_s=1.0)
    notifiers = {
        "telegram": TelegramNotifier(bot, SIGNER, pace_s=0.0),
        "slack": SlackNotifier(make_client(slack.token, slack.url, timeout_s=2.0), SIGNER),
    }
    throttles = {"telegram": ChatThrottle(TELEGRAM_LIMITS), "slack": ChatThrottle(SLACK_LIMITS)}
    deliverer = Deliverer(
        store, notifiers, throttles, clock, config=DeliveryConfig(timeout_s=5, max_attempts=4)
    )
    routing = default_routing([Destination("telegram", str(CHAT)), Destination("slack", CHANNEL)], TIMING)
    dispatcher = Dispatcher(store, routing, clock)
    yield Rig(record, store, dispatcher, deliverer, clock, telegram, slack)
    await bot.shutdown()
    await record.close()
    await telegram.stop()
    await slack.stop()


def make_alert(title: str = "checkout.latency unusually high", **kw: object) -> Alert:
    base = Alert(
        id="a1b2c3d4",
        group_key="anomaly:checkout.latency",
        status="firing",
        severity="critical",
        title=title,
        series="checkout.latency",
        service="checkout",
        source="prometheus",
        started_at=T0,
        updated_at=T0,
        score=0.97,
        value=912.0,
        expected=200.0,
        lower=170.0,
        upper=230.0,
        explanation="checkout.latency 912 vs expected 200±30, 23σ above",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class TagBalance(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ok = True

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.ok = self.ok and bool(self.stack) and self.stack.pop() == tag


def balanced(text: str) -> bool:
    parser = TagBalance()
    parser.feed(text)
    parser.close()
    return parser.ok and not parser.stack


async def test_alert_reaches_both_chats_escaped_with_signed_buttons(rig: Rig) -> None:
    hostile = "checkout <b>down</b> & @channel <!channel> @here"
    await rig.put(make_alert(title=hostile))
    assert await rig.run() == 2
    [tg] = rig.telegram.chat(CHAT)
    assert "checkout &lt;b&gt;down&lt;/b&gt; &amp;" in tg.text and "<b>down</b>" not in tg.text
    assert "912 vs expected 200" in tg.text and "firing since" in tg.text
    assert balanced(tg.text)
    buttons = [b for row in tg.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert [b["text"] for b in buttons] == ["Ack", "Silence 1h", "Resolve"]
    assert SIGNER.verify(buttons[0]["callback_data"]).startswith("ack ")
    [sl] = rig.slack.messages(CHANNEL)
    text = sl.all_text()
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text and "@channel" not in text
    assert "@here" not in text
    actions = next(b for b in sl.blocks if b["type"] == "actions")
    assert SIGNER.verify(actions["elements"][2]["value"]).startswith("resolve ")
    assert sl.metadata and sl.metadata["event_payload"]["group"]
    assert await rig.statuses() == ["sent", "sent"]


async def test_resolution_edits_the_same_message_in_place(rig: Rig) -> None:
    alert = make_alert()
    await rig.put(alert)
    await rig.run()
    await rig.put(replace(alert, status="resolved", resolved_at=T0 + 300, version=2), change="resolved")
    await rig.run(advance=300)
    [tg] = rig.telegram.chat(CHAT)
    assert tg.edits == 1 and "RESOLVED" in tg.text and "resolved after 5 min" in tg.text
    assert not tg.reply_markup  # no buttons on a resolved alert
    [sl] = rig.slack.messages(CHANNEL)
    assert sl.edits == 1 and "RESOLVED" in sl.all_text()
    assert [r.text for r in sl.replies] == ["Resolved: checkout.latency unusually high"]


async def test_429_is_retried_after_retry_after_and_then_delivered(rig: Rig) -> None:
    rig.telegram.fail_next("sendMessage", 429, retry_after=7)
    rig.slack.fail_next("chat.postMessage", 429, retry_after=5)
    await rig.put(make_alert())
    assert await rig.run() == 0
    assert rig.telegram.chat(CHAT) == [] and rig.slack.messages(CHANNEL) == []
    assert await rig.run(advance=4) == 0  # neither platform's wait is over: nothing is sent
    assert len(rig.telegram.method_calls("sendMessage")) == 1
    assert await rig.run(advance=4) == 2  # 8 s later: both waits are over
    assert len(rig.telegram.chat(CHAT)) == 1 and len(rig.slack.messages(CHANNEL)) == 1


async def test_5xx_is_retried_with_backoff_then_delivered(rig: Rig) -> None:
    rig.telegram.fail_next("sendMessage", 502)
    rig.slack.fail_next("chat.postMessage", 500)
    await rig.put(make_alert())
    assert await rig.run() == 0
    assert await rig.run(advance=2) == 2
    assert len(rig.telegram.chat(CHAT)) == 1 and len(rig.slack.messages(CHANNEL)) == 1


async def test_permanent_errors_stop_retrying_and_show_as_problems(rig: Rig) -> None:
    rig.telegram.fail_next("sendMessage", 403, "Forbidden: bot was kicked from the group chat")
    rig.slack.fail_next("chat.postMessage", 200, "channel_not_found")
    await rig.put(make_alert())
    assert await rig.run() == 2
    assert await rig.statuses() == ["failed", "failed"]
    calls = len(rig.telegram.calls) + len(rig.slack.calls)
    await rig.run(advance=600)
    assert len(rig.telegram.calls) + len(rig.slack.calls) == calls  # no retry of a permanent error
    problems = {p.platform: p for p in await rig.store.delivery_problems(T0 - 1)}
    assert "bot was kicked" in problems["telegram"].last_error
    assert "channel_not_found" in problems["slack"].last_error
    # …and on-call sees it in /status.
    from bot.commands import CommandContext, CommandCore
    from engine.answers.answer import RetrievalAnswerer

    core = CommandCore(rig.record, RetrievalAnswerer(rig.record), clock=rig.clock, delivery=rig.store)
    status = await core.handle(CommandContext("console", "1", "ana", "console"), "/status")
    shown = "\n".join(status.blocks)
    assert f"telegram {CHAT}: 1 alert message(s) not delivered" in shown and "bot was kicked" in shown


async def test_a_stalled_api_times_out_and_is_retried(rig: Rig) -> None:
    rig.telegram.stall_s = 2.5  # longer than the client's 1 s timeout
    await rig.put(make_alert())
    await rig.run()
    assert (await rig.statuses()).count("pending") == 1
    rig.telegram.stall_s = 0
    await rig.run(advance=5)
    assert await rig.statuses() == ["sent", "sent"]
    assert len(rig.telegram.chat(CHAT)) >= 1


async def slack_post_in_doubt(rig: Rig) -> None:
    """Post an alert, then put it as if the process died after Slack took the post but before
    it was marked sent."""
    await rig.put(make_alert())
    await rig.run()
    await rig.record.db.execute("UPDATE deliveries SET status = 'sending' WHERE platform = 'slack'")
    await rig.record.db.execute("DELETE FROM chat_messages WHERE platform = 'slack'")
    assert await rig.deliverer.store.recover() == 1


async def test_in_doubt_slack_post_is_found_and_edited_not_duplicated(rig: Rig) -> None:
    await slack_post_in_doubt(rig)
    await rig.run(advance=2)
    assert len(rig.slack.messages(CHANNEL)) == 1
    assert len(rig.slack.method_calls("conversations.history")) == 1


async def test_an_in_doubt_post_is_not_repeated_in_a_burst_digest(rig: Rig) -> None:
    # A new leader takes over with a backlog: the dead one's in-doubt post and more new groups
    # than a burst allows. The in-doubt one is found and edited; the digest leaves it out.
    await slack_post_in_doubt(rig)
    for i in range(5):
        series = f"search{i}.latency"
        await rig.put(make_alert(f"{series} unusually high", id=f"b{i}", group_key=f"anomaly:{series}",
                                 series=series, service=f"search{i}"))  # fmt: skip
    await rig.run(advance=2)
    await rig.run(advance=2)
    naming = [m for m in rig.slack.messages(CHANNEL) if "checkout.latency" in m.text + str(m.blocks)]
    assert len(naming) == 1, [m.text for m in rig.slack.messages(CHANNEL)]
    assert len(rig.slack.method_calls("conversations.history")) == 1
    assert all(s == "sent" for s in await rig.statuses())


async def test_a_huge_group_is_split_into_valid_telegram_parts_naming_every_series(rig: Rig) -> None:
    for i in range(300):
        series = f"checkout.endpoint_{i:03d}.latency"
        await rig.put(
            make_alert(
                id=f"x{i:07d}",
                group_key=f"anomaly:{series}",
                series=series,
                severity="error",
                title=f"{series} high",
            )
        )
    await rig.run()
    parts = rig.telegram.chat(CHAT)
    assert len(parts) > 1
    text = "\n".join(p.text for p in parts)
    for part in parts:
        assert len(part.text.encode("utf-16-le")) // 2 <= 4096 and balanced(part.text)
    assert all(f"checkout.endpoint_{i:03d}.latency" in text for i in range(300))
    [sl] = rig.slack.messages(CHANNEL)  # Slack takes it in one message of several sections
    assert all(f"checkout.endpoint_{i:03d}.latency" in sl.all_text() for i in range(300))
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in sl.blocks)


async def test_chart_goes_out_as_telegram_photo_and_slack_upload(rig: Rig, tmp_path: Path) -> None:
    from bot.app import ChartMaker

    points = [
        make_signal(series="checkout.latency", value=200.0 + (i % 5), ts=T0 - 3600 + 60 * i)
        for i in range(60)
    ]
    points.append(make_signal(series="checkout.latency", value=912.0, ts=T0))
    async with rig.record.transaction() as tx:
        await tx.add_signals([(s, s.ts) for s in points])
        await tx.add_anomalies(
            [
                Anomaly(
                    "an1",
                    points[-1].id,
                    T0,
                    "checkout.latency",
                    "checkout",
                    912.0,
                    200.0,
                    170.0,
                    230.0,
                    0.97,
                    ("robust_z",),
                    "912 vs 200",
                )
            ]
        )
    rig.deliverer.charts = ChartMaker(rig.record, __import__("datetime").UTC)
    await rig.put(make_alert())
    await rig.run()
    [photo] = rig.telegram.chat(CHAT)
    assert photo.photo and len(photo.text) <= 1024 and "912 vs expected 200" in photo.text
    [call] = rig.telegram.method_calls("sendPhoto")
    assert call["photo_bytes"].startswith(b"\x89PNG")
    [sl] = rig.slack.messages(CHANNEL)
    assert sl.files and sl.files[0].startswith(b"\x89PNG")
    # The photo's caption is what is edited later.
    await rig.put(replace(make_alert(), status="resolved", resolved_at=T0 + 60, version=2), change="resolved")
    await rig.run(advance=60)
    assert rig.telegram.chat(CHAT)[0].edits == 1 and len(rig.telegram.method_calls("editMessageCaption")) == 1


async def test_a_library_bug_in_one_platform_does_not_stop_the_others(rig: Rig) -> None:
    """An unexpected exception on one row is retried; the other chat's row goes out in the same step."""
    rig.slack.answer_next("chat.postMessage", ["not", "an", "object"])  # slack-sdk meets a list
    await rig.put(make_alert())
    await rig.run()
    assert len(rig.telegram.chat(CHAT)) == 1
    assert rig.slack.messages(CHANNEL) == [] and sorted(await rig.statuses()) == ["pending", "sent"]
    rig.clock.now += 5  # past the first backoff: the Slack row is retried and goes out once
    await rig.deliverer.step()
    assert len(rig.slack.messages(CHANNEL)) == 1 and await rig.statuses() == ["sent", "sent"]


async def test_a_chart_upload_that_breaks_inside_slack_sdk_keeps_the_posted_alert(rig: Rig) -> None:
    """files_upload_v2 raising from deep inside slack-sdk: the alert stays posted once, without a chart."""

    async def chart(note: object) -> bytes:
        return b"\x89PNG fake chart"

    rig.deliverer.charts = chart
    rig.slack.answer_next("files.getUploadURLExternal", {"ok": True})  # no upload_url, no file_id
    await rig.put(make_alert())
    await rig.run()
    [posted] = rig.slack.messages(CHANNEL)
    assert not posted.files and await rig.statuses() == ["sent", "sent"]
    rig.clock.now += 600
    await rig.deliverer.step()
    assert len(rig.slack.messages(CHANNEL)) == 1  # not posted again


async def test_after_an_ack_the_button_offers_unack(rig: Rig) -> None:
    await rig.put(make_alert())
    await rig.run()
    acked = replace(make_alert(), acked_by="lena (telegram)", acked_at=T0 + 30, version=2)
    await rig.put(acked, change="updated")
    await rig.run(advance=60)
    [tg] = rig.telegram.chat(CHAT)
    buttons = [b for row in tg.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert [b["text"] for b in buttons] == ["Unack", "Silence 1h", "Resolve"]
    assert SIGNER.verify(buttons[0]["callback_data"]).startswith("unack ")
    assert "acknowledged by lena (telegram)" in tg.text
