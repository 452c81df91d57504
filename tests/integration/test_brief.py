"""The brief's content from a seeded night and two days (the question set's world), in chat and on the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.commands import brief_reply
from bot.console import render_text
from engine.alerting.silences import make_silence
from engine.brief.content import build_brief
from storage.sqlite import SqliteRecord
from tests.bot.test_cli import run
from tests.qa.test_qa import NOW, TZ, seed


async def test_brief_names_what_happened_with_counts_and_ids(tmp_path: Path) -> None:
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    await seed(record)
    now = NOW.timestamp()
    silence = make_silence(['service="search"'], "4h", "ana (slack)", "reindex", now - 600)
    brief = await build_brief(record, now - 86400, now, TZ, [silence])
    text = render_text(brief_reply(brief, TZ))
    assert "3 alert(s) fired, 2 resolved, 1 still open — start there." in text
    assert "[chk0002b] critical checkout.errors unusually high since Tue 03:02" in text
    assert (
        "[aut0003c] auth.login_failures unusually high after 50 min by ana (slack): bad config pushed" in text
    )
    assert "checkout.errors: peak 74 vs expected 11 at Tue 03:02" in text
    assert "after deploy checkout v2.4" in text and "[sigchk01]" in text
    assert "Tue 03:00 deploy checkout v2.4: new payment-method picker — followed by 2 anomalous" in text
    assert "deploy deploy" not in text and "deploy on checkout: deploy" not in text
    fired = text[text.index("Fired:") :]
    assert fired.index("[aut0003c]") < fired.index("[chk0002b]") < fired.index("[pay0001a]")  # in time order
    assert 'service="search" until Tue 18:10 (ends today), by ana (slack)' in text
    assert "search.queue_depth" not in text  # Sunday is outside the window
    await record.close()


async def test_quiet_window_says_so(tmp_path: Path) -> None:
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    brief = await build_brief(record, 0, 100, TZ)
    assert brief.headline == "Quiet night: no alerts."
    await record.close()


async def test_sigops_brief_print(tmp_path: Path) -> None:
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    await seed(record)
    await record.close()
    result = await asyncio.to_thread(run, ["brief", "--print"], tmp_path, {"SIGOPS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "Brief ·" in result.stdout


async def test_a_long_brief_splits_into_valid_telegram_messages_and_fits_slack(tmp_path: Path) -> None:
    from dataclasses import replace

    from bot.callbacks import CallbackSigner
    from bot.slack_notify import SlackNotifier, make_client
    from bot.telegram_notify import TelegramNotifier, make_bot
    from engine.alerting.alerts import AlertChange
    from tests.fakes.slack_api import FakeSlack
    from tests.fakes.telegram_api import FakeTelegram
    from tests.integration.test_delivery import balanced, make_alert

    record = await SqliteRecord.open(tmp_path / "sigops.db")
    now = NOW.timestamp()
    async with record.transaction() as tx:
        await tx.write_alerts(
            [
                AlertChange(
                    replace(
                        make_alert(),
                        id=f"b{i:07d}",
                        group_key=f"k{i}",
                        started_at=now - 600,
                        title=f"svc{i}.errors <high> & rising",
                    ),
                    "opened",
                )
                for i in range(150)
            ]
        )
    reply = brief_reply(await build_brief(record, now - 86400, now, TZ), TZ)
    telegram, slack = await FakeTelegram().start(), await FakeSlack().start()
    bot = make_bot(telegram.token, telegram.url)
    signer = CallbackSigner(b"k" * 32)
    await TelegramNotifier(bot, signer, pace_s=0).post_brief("-700", reply)
    await SlackNotifier(make_client(slack.token, slack.url), signer).post_brief("C0ALERTS", reply)
    parts = telegram.chat(-700)
    assert len(parts) > 1 and all(
        len(p.text.encode("utf-16-le")) // 2 <= 4096 and balanced(p.text) for p in parts
    )
    text = "\n".join(p.text for p in parts)
    assert "svc149.errors &lt;high&gt; &amp; rising" in text and "150 alert(s) fired" in text
    [message] = slack.messages("C0ALERTS")
    assert len(message.blocks) <= 50 and all(
        len(b.get("text", {}).get("text", "")) <= 3000 for b in message.blocks
    )
    await bot.shutdown()
    await telegram.stop()
    await slack.stop()
    await record.close()


async def test_the_model_writes_a_cited_narrative_and_the_brief_stands_without_it(tmp_path: Path) -> None:
    from bot.commands import CommandCore, compose_brief
    from engine.answers.answer import RetrievalAnswerer
    from engine.answers.narrate import ModelAnswerer
    from engine.signal import make_signal
    from storage.ollama_model import OllamaModel
    from tests.conftest import free_port
    from tests.fakes.ollama_api import FakeOllama

    record = await SqliteRecord.open(tmp_path / "sigops.db")
    await seed(record)
    now = NOW.timestamp()
    points = [
        make_signal(series="checkout.errors", value=10.0 + (i % 3), ts=now - 20 * 3600 + 300 * i)
        for i in range(200)
    ]
    async with record.transaction() as tx:
        await tx.add_signals([(p, p.ts) for p in points])
    ollama = await FakeOllama().start()
    ollama.answer = "Start with checkout: errors hit 74 after the v2.4 deploy [chk0002b] and are still open."

    def core_for(host: str) -> CommandCore:
        narrator = ModelAnswerer(RetrievalAnswerer(record), OllamaModel(host, "llama3.2", 5), TZ, 5)
        return CommandCore(
            record,
            RetrievalAnswerer(record),
            narrator=narrator,
            chart_dir=tmp_path / "charts",
            tz=TZ,
            clock=lambda: now,
        )

    reply = await compose_brief(core_for(ollama.host), now - 86400, now)
    assert reply.blocks[0] == ollama.answer and "summary by llama3.2" in reply.footer
    assert "Top anomalies:" in "\n".join(reply.blocks)
    assert reply.image is not None and reply.image.read_bytes().startswith(b"\x89PNG")
    prompt = ollama.chats()[0]["messages"][-1]["content"]
    assert "<data>" in prompt and "[chk0002b]" in prompt
    await ollama.stop()
    down = await compose_brief(core_for(f"http://127.0.0.1:{free_port()}"), now - 86400, now)
    assert (
        down.blocks[0].startswith("Still open:")
        and "structured brief (no narrative: Ollama is not reachable" in down.footer
    )
    await record.close()
