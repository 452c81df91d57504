"""The `sigops` command as a user runs it: help, bad settings, the demo, chat and ask."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from engine.alerting.alerts import Alert, AlertChange
from engine.detection.detect import Anomaly
from storage.sqlite import SqliteRecord

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: str = "", timeout: float = 60):
    # No SIGOPS_* settings from the developer's shell, except the database an integration test's
    # backend fixture points at (the PostgreSQL runs).
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGOPS_") or k == "SIGOPS_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_the_subcommands(tmp_path: Path) -> None:
    result = run(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("serve", "worker", "demo", "chat", "ask"):
        assert command in result.stdout


def test_a_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    result = run(
        ["ask", "anything"], tmp_path, env={"SIGOPS_HTTP_PORT": "eighty", "SIGOPS_TIMEZONE": "Mars/Olympus"}
    )
    assert result.returncode == 2
    assert "SIGOPS_HTTP_PORT" in result.stderr and "'eighty'" in result.stderr
    assert "SIGOPS_TIMEZONE" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_the_whole_loop_and_shows_alerts(tmp_path: Path) -> None:
    result = run(["demo", "--duration", "22", "--interval", "0.4", "--no-http"], tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr
    # It says once what it runs without, and how to add each.
    assert result.stderr.count("no Redis") == 1
    assert "SIGOPS_REDIS_URL" in result.stderr and "SIGOPS_OLLAMA_HOST" in result.stderr
    assert "SIGOPS_TELEGRAM_TOKEN" in result.stderr and "SIGOPS_SLACK_BOT_TOKEN" in result.stderr
    # The injected incidents reach the console as alerts, each announced once.
    firing = [line for line in result.stdout.splitlines() if line.startswith("🔥 FIRING")]
    assert any("checkout.errors" in line for line in firing), result.stdout[-2000:]
    assert any("payments.latency_p99" in line for line in firing)
    assert len(firing) == len(set(firing))
    assert ", expected " in result.stdout and "(usual " in result.stdout
    # Each new alert group comes with its chart, saved where the console can point to it.
    charts = list((tmp_path / "data" / "charts").glob("alert-*.png"))
    assert charts and all(c.read_bytes().startswith(b"\x89PNG") for c in charts)
    assert "chart: data/charts/alert-" in result.stdout
    assert (tmp_path / "data" / "demo.db").exists()
    # Nothing was flagged during the quiet 3-hour backfill.
    assert not any("requests" in line for line in firing), firing


async def seed(path: Path) -> None:
    record = await SqliteRecord.open(path)
    now = __import__("time").time()
    anomaly = Anomaly(
        id="sig1:robust_z",
        signal_id="sig1aaaaaaaa",
        ts=now - 600,
        series="payments.latency_p99",
        service="payments",
        value=840.0,
        expected=210.0,
        lower=170.0,
        upper=250.0,
        score=0.97,
        detectors=("robust_z",),
        explanation="payments.latency_p99 840 vs expected 210±40, 6.1σ above",
    )
    alert = Alert(
        id="3f9a2c1b",
        group_key="anomaly:payments.latency_p99",
        status="firing",
        severity="error",
        title="payments.latency_p99 unusually high",
        series="payments.latency_p99",
        service="payments",
        source="demo",
        started_at=now - 600,
        updated_at=now - 600,
        score=0.97,
        value=840.0,
        expected=210.0,
        lower=170.0,
        upper=250.0,
        explanation=anomaly.explanation,
    )
    async with record.transaction() as tx:
        await tx.add_anomalies([anomaly])
        await tx.write_alerts([AlertChange(alert, "opened")])
    await record.close()


async def test_chat_status_lists_firing_alerts_with_score_and_series(tmp_path: Path) -> None:
    await seed(tmp_path / "sigops.db")
    result = run(
        ["chat"],
        tmp_path,
        env={"SIGOPS_DATA_DIR": str(tmp_path)},
        stdin="/status\n/bogus\nwhat spiked on payments in the last 6 hours?\n",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1 alert(s) open" in out
    assert "[3f9a2c1b] ERROR payments.latency_p99 unusually high — score 0.97" in out
    assert "Unknown command /bogus" in out
    assert "Last 6 hours for payments: 1 alert(s)" in out
    assert "peak 840 vs expected 210" in out


async def test_ask_json_gives_answer_evidence_and_figures(tmp_path: Path) -> None:
    await seed(tmp_path / "sigops.db")
    result = run(
        ["ask", "--json", "anything odd with payments?"], tmp_path, env={"SIGOPS_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["services"] == ["payments"]
    assert {e["id"] for e in answer["evidence"]} == {"3f9a2c1b", "sig1aaaa"}
    assert answer["figures"]["alerts"] == 1 and answer["figures"]["max_score"] == 0.97


async def test_forecast_reads_the_record(tmp_path: Path) -> None:
    import time as clock

    from engine.signal import make_signal

    record = await SqliteRecord.open(tmp_path / "sigops.db")
    now = clock.time()
    points = [
        make_signal(series="search.disk_used_pct", value=40 + 5 * i / 60, ts=now - 6 * 3600 + 60 * i)
        for i in range(360)
    ]
    async with record.transaction() as tx:
        await tx.add_signals([(s, s.ts) for s in points])
    await record.close()
    env = {"SIGOPS_DATA_DIR": str(tmp_path)}
    result = run(["forecast", "search.disk_used_pct"], tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert re.match(
        r"at this rate search\.disk_used_pct crosses 100 in about (5\.\d|6(\.\d)?) h", result.stdout
    )
    unknown = run(["forecast", "search.queue_depth"], tmp_path, env=env)
    assert unknown.returncode == 2 and "give one with --limit" in unknown.stderr


def test_serve_starts_from_a_copy_of_the_documented_env_file(tmp_path: Path) -> None:
    """The README's path: `cp .env.example .env && sigops serve` (empty values mean unset)."""
    import shutil
    import time
    import urllib.request

    from tests.conftest import REDIS_URL, free_port

    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    port = free_port()
    # No SIGOPS_* settings from the developer's shell, except the database an integration test's
    # backend fixture points at (the PostgreSQL runs).
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGOPS_") or k == "SIGOPS_DATABASE_URL"}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        # Only what keeps the test off shared resources; everything else comes from the copied .env.
        "SIGOPS_REDIS_URL": REDIS_URL,
        "SIGOPS_REDIS_PREFIX": f"test-envfile-{os.getpid()}",
        "SIGOPS_HTTP_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = None
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    ready = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[1]
        assert ready is not None and ready["ready"] is True
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{env['SIGOPS_REDIS_PREFIX']}*"):
            client.delete(key)
        client.close()
    assert "Traceback" not in err and "bad settings" not in err
    assert (tmp_path / "data" / "sigops.db").exists()  # SIGOPS_DATA_DIR=./data, relative to where it runs


def test_a_short_callback_secret_is_a_settings_error(tmp_path: Path) -> None:
    result = run(["ask", "anything"], tmp_path, env={"SIGOPS_CALLBACK_SECRET": "short"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "SIGOPS_CALLBACK_SECRET: needs at least 16 characters" in result.stderr


def test_ctrl_c_ends_the_chat_console_while_it_waits_for_a_line(tmp_path: Path) -> None:
    import signal
    import time

    # No SIGOPS_* settings from the developer's shell, except the database an integration test's
    # backend fixture points at (the PostgreSQL runs).
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGOPS_") or k == "SIGOPS_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "chat"],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,  # held open: the console blocks reading a line, as at a terminal
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "SigOps console" in proc.stdout.readline()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5)  # before: it waited for Enter
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode in (0, 130)


async def test_an_apostrophe_is_just_a_character_in_questions_and_notes(tmp_path: Path) -> None:
    """Free text is never split like a shell line: "what's up" is a question, not a quoting error."""
    await seed(tmp_path / "sigops.db")
    env = {"SIGOPS_DATA_DIR": str(tmp_path)}
    asked = run(["ask", "what's up with payments in the last 6 hours?"], tmp_path, env=env)
    assert asked.returncode == 0 and "Could not read" not in asked.stdout
    assert "for payments: 1 alert(s)" in asked.stdout
    chat = run(
        ["chat"],
        tmp_path,
        env=env,
        stdin="what's up with payments in the last 6 hours?\n/ask what's firing?\n"
        '/resolve 3f9a2c1b it\'s fixed, rolled back "v2"\n/status\n',
    )
    assert chat.returncode == 0, chat.stderr
    assert "Could not read" not in chat.stdout and "No closing quotation" not in chat.stdout
    assert chat.stdout.count("for payments: 1 alert(s)") >= 1
    assert "resolved payments.latency_p99" in chat.stdout and "0 alert(s) open" in chat.stdout


def test_version_and_a_quiet_start(tmp_path: Path) -> None:
    version = run(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("sigops ")
    started = run(["ask", "anything?"], tmp_path, env={"SIGOPS_PROMETHEUS_URL": "http://127.0.0.1:9"})
    assert started.returncode == 0
    assert "schema migrated" not in started.stderr  # one line at most, not one per migration
    assert started.stderr.count("SQLite schema at version") <= 1


async def test_evidence_times_are_in_the_configured_zone_and_labelled(tmp_path: Path) -> None:
    await seed(tmp_path / "sigops.db")
    env = {"SIGOPS_DATA_DIR": str(tmp_path), "SIGOPS_TIMEZONE": "Asia/Tokyo"}
    asked = run(["ask", "what spiked on payments in the last 6 hours?"], tmp_path, env=env)
    evidence = [line for line in asked.stdout.splitlines() if line.strip().startswith("[3f9a2c1b]")]
    assert evidence and all(" JST " in line for line in evidence)  # not UTC without a label
