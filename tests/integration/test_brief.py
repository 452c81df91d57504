"""The brief's content from a seeded night and two days (the question set's world), in chat and on the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.commands import brief_reply
from bot.console import render_text
from engine.brief import build_brief
from engine.silences import make_silence
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
    assert "after deploy deploy checkout v2.4" in text and "[sigchk01]" in text
    assert (
        "deploy on checkout: deploy checkout v2.4: new payment-method picker — followed by 2 anomalous"
        in text
    )
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
