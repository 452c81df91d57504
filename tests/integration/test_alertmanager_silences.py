"""Silences meet Alertmanager: the real `prometheus-alertmanager` (Debian's), started by the test."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.commands import CommandContext
from bot.parts.answers import standalone_core
from bot.settings import Settings
from engine.alerting.alerts import Alert, AlertChange
from storage.sqlite import SqliteRecord
from tests.conftest import ServerProcess, free_port

NOW = time.time()
LABELS = {"alertname": "NodeDown", "instance": "db1:9100", "job": "node", "severity": "critical"}
ANA = CommandContext("slack", "U1", "ana", "C1", "responder")


class Alertmanager(ServerProcess):
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        (workdir / "alertmanager.yml").write_text(
            "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn(
            [
                "prometheus-alertmanager",
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip port on 0.0.0.0
            ]
        )


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    if shutil.which("prometheus-alertmanager") is None:
        pytest.fail("prometheus-alertmanager is needed for this test (.ci/run installs Debian's package)")
    server = Alertmanager(tmp_path)
    server.start()
    yield server
    server.stop()


async def api(method: str, url: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.request(method, url, json=body) as response:
            assert response.status < 300, await response.text()
            text = await response.text()
            return await response.json(content_type=None) if text.strip() else None


async def ready(url: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/-/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        else:
            await asyncio.sleep(0.2)
    raise AssertionError("Alertmanager did not start")


def node_down() -> Alert:
    return Alert(
        id="5e1f0a2b",
        group_key="alertmanager:fp-db1",
        status="firing",
        severity="critical",
        title="NodeDown",
        series="NodeDown",
        service="",
        source="alertmanager",
        started_at=NOW - 60,
        updated_at=NOW - 60,
        score=1.0,
        labels={**LABELS, "status": "firing", "fingerprint": "fp-db1", "__link.source": "http://prom/graph"},
    )


async def test_silencing_an_alertmanager_alert_silences_it_there_and_unsilence_ends_it(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    await ready(alertmanager.url)
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    async with record.transaction() as tx:
        await tx.write_alerts([AlertChange(node_down(), "opened")])
    settings = Settings(data_dir=tmp_path, alertmanager_url=alertmanager.url)  # type: ignore[call-arg]
    core = standalone_core(settings, record)
    # Alertmanager has the alert too, and would notify its receivers about it.
    await api("POST", f"{alertmanager.url}/api/v2/alerts", [{"labels": LABELS}])

    said = await core.handle(ANA, "silence 5e1f0a2b 2h disk swap on db1")
    assert "Also silenced in Alertmanager" in said.title, said

    theirs = [
        s for s in await api("GET", f"{alertmanager.url}/api/v2/silences") if s["status"]["state"] == "active"
    ]
    assert len(theirs) == 1
    silence = theirs[0]
    assert {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]} == {
        (k, v, True, False) for k, v in LABELS.items()
    }  # the alert's own labels: not SigOps' series, fingerprint or links
    assert silence["createdBy"] == "ana (slack)" and silence["comment"] == "disk swap on db1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alerts = await api("GET", f"{alertmanager.url}/api/v2/alerts")
        if alerts and alerts[0]["status"]["state"] == "suppressed":
            break
        await asyncio.sleep(0.3)
    assert alerts[0]["status"]["silencedBy"] == [silence["id"]]

    # A silence someone made in Alertmanager itself is listed too, marked as its own.
    await api(
        "POST",
        f"{alertmanager.url}/api/v2/silences",
        {
            "matchers": [{"name": "job", "value": "batch", "isRegex": False, "isEqual": True}],
            "startsAt": "2020-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "bob",
            "comment": "batch window",
        },
    )
    listed = await core.handle(ANA, "silences")
    text = "\n".join([listed.title, *listed.blocks])
    assert listed.title == "1 active silence(s), 1 more in Alertmanager", text
    assert "In Alertmanager:\n[" in text and 'job="batch"' in text and "by bob: batch window" in text

    ours = (await record.db.rows("SELECT id FROM silences"))[0][0]
    ended = await core.handle(ANA, f"unsilence {ours}")
    assert "Ended in Alertmanager too." in ended.title, ended
    states = {s["id"]: s["status"]["state"] for s in await api("GET", f"{alertmanager.url}/api/v2/silences")}
    assert states[silence["id"]] == "expired"
    await record.close()


async def test_alertmanager_down_leaves_the_sigops_silence_standing_and_says_so(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    await ready(alertmanager.url)
    alertmanager.stop()
    record = await SqliteRecord.open(tmp_path / "sigops.db")
    async with record.transaction() as tx:
        await tx.write_alerts([AlertChange(node_down(), "opened")])
    core = standalone_core(Settings(data_dir=tmp_path, alertmanager_url=alertmanager.url), record)  # type: ignore[call-arg]
    said = await core.handle(ANA, "silence 5e1f0a2b 1h")
    assert said.title.startswith('Silenced series="NodeDown" for 60 min'), said
    assert "Alertmanager did not take it" in said.title and "did not answer" in said.title
    listed = await core.handle(ANA, "silences")
    assert listed.title == "1 active silence(s)"
    assert any("could not be read" in b for b in listed.blocks)
    await record.close()
