"""Kill -9 under load: are signals and alerts still each recorded once, and every alert told?

    .venv/bin/python bench/chaos.py [--series 40] [--points 3000] [--workers 2] [--kill-every 2.0]

Starts `sigops serve --workers 0` (HTTP, the alert pipeline and delivery to the console)
and worker processes against Redis at 127.0.0.1:6379 (DB 14, a key prefix of its own,
deleted afterwards), with the record in a SQLite file of its own. It posts a seeded
stream (a daily curve with noise per series; every other series gets two 80σ spikes)
in batches of 100, while it `kill -9`s a random worker every `--kill-every` seconds and
starts a new one. Then it waits for the backlog to drain and compares:

- signals: every one sent is recorded, none twice;
- alerts: per series, the alerts recorded against those the same points give when
  replayed through the same `Detection` in this process with no kills (`sigops detect`'s
  path) - a spike that opened and closed between two kills must still be one alert;
- told: every alert was taken up by the pipeline (the `told` flag the dispatcher sets).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import bench_env, post_all, start, stop_and_clean, wait_ready
from bot.parts.detection import build_detection
from bot.settings import Settings
from engine.signal import Signal

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_795_000_000.0
STEP_S = 60.0
SPIKES = (0.35, 0.7)  # where the spikes fall, as a fraction of the series


def stream(series: int, points: int, seed: int) -> list[list[dict[str, object]]]:
    """Per point index, one record per series: interleaved as live senders would send them."""
    rng = random.Random(seed)
    spiked = {int(points * f) for f in SPIKES}
    rows = []
    for i in range(points):
        row = []
        for s in range(series):
            value = 100 + 10 * math.sin(2 * math.pi * i / 1440) + rng.gauss(0, 1)
            if s % 2 == 0 and any(0 <= i - at < 3 for at in spiked):
                value += 80
            row.append({"series": f"chaos.s{s:03d}", "value": round(value, 3), "ts": T0 + i * STEP_S,
                        "labels": {"service": "chaos"}})  # fmt: skip
        rows.append(row)
    return rows


def expected_alerts(rows: list[list[dict[str, object]]]) -> tuple[Counter[str], int]:
    """Alert opens per series from the same points through the same detection, no kills;
    and how many episodes are still open after the last point."""
    detection = build_detection(Settings())
    opened: Counter[str] = Counter()
    still_open: dict[str, bool] = {}
    for i, row in enumerate(rows):
        for r in row:
            name, value, ts = str(r["series"]), float(r["value"]), float(r["ts"])  # type: ignore[arg-type]
            signal_ = Signal(
                f"{name}-{i}", ts, "api", "metric", name, value, {"service": "chaos"}, None, "info"
            )
            obs = detection.observe(signal_, arrived_at=ts)
            opened[name] += obs.transition == "opened"
            still_open[name] = obs.open
    return +opened, sum(still_open.values())


def recorded(db: Path) -> tuple[int, Counter[str], int, int]:
    """Signals recorded, alerts per series, alerts the pipeline took up, alerts still firing."""
    if not db.exists():
        return 0, Counter(), 0, 0
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            signals = int(conn.execute("SELECT count(*) FROM signals").fetchone()[0])
            alerts = Counter(
                {row[0]: int(row[1]) for row in conn.execute(
                    "SELECT series, count(*) FROM alerts WHERE series LIKE 'chaos.%' GROUP BY series")}
            )  # fmt: skip
            told = int(conn.execute("SELECT count(*) FROM alerts WHERE told = 1").fetchone()[0])
            firing = int(conn.execute("SELECT count(*) FROM alerts WHERE status != 'resolved'").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0, Counter(), 0, 0
    return signals, alerts, told, firing


async def paced(url: str, bodies: list[bytes], rate: int) -> None:
    """Post the bodies (100 signals each) at about `rate` signals/s, one request at a time:
    concurrent requests reach the stream in any order, so a series' points would be seen out
    of order with or without kills, and the comparison would not be about the kills."""
    per_second = max(1, rate // 100)
    for start_at in range(0, len(bodies), per_second):
        began = time.monotonic()
        await post_all(url, bodies[start_at : start_at + per_second], 1)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--points", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=int, default=2000, help="signals/s sent (kills land all along)")
    args = parser.parse_args()

    rows = stream(args.series, args.points, args.seed)
    total = args.series * args.points
    expected, expected_firing = expected_alerts(rows)
    flat = [r for row in rows for r in row]
    bodies = [orjson.dumps(flat[i : i + 100]) for i in range(0, total, 100)]

    data_dir, prefix, port, env = bench_env("chaos", "ERROR")
    env["SIGOPS_WORKER_BATCH"] = "5"  # small batches: many chances to die mid-batch
    url = f"http://127.0.0.1:{port}"
    db = data_dir / "sigops.db"
    server = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--workers", "0"],
        cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    kills = 0
    rng = random.Random(args.seed)
    try:
        await wait_ready(url)
        workers = [start(["worker"], env) for _ in range(args.workers)]
        sending = asyncio.create_task(paced(url, bodies, args.rate))
        started = time.monotonic()
        while True:
            await asyncio.sleep(args.kill_every)
            signals = recorded(db)[0]
            if sending.done() and signals >= total:
                break
            if time.monotonic() - started > 600:
                raise RuntimeError(f"the backlog did not drain in 10 minutes ({signals} of {total})")
            if signals < total:
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = start(["worker"], env)
                kills += 1
        await sending
        settle = time.monotonic() + 120  # the pipeline's group waits, and the last episodes' closes
        while time.monotonic() < settle:
            signals, alerts, told, firing = recorded(db)
            if told == sum(alerts.values()) and alerts == expected and firing == expected_firing:
                break
            await asyncio.sleep(0.5)
        signals, alerts, told, firing = recorded(db)
        elapsed = time.monotonic() - started
    finally:
        await stop_and_clean([server, *workers], prefix, data_dir)

    spiked = sum(1 for s in range(args.series) if s % 2 == 0) * len(SPIKES)
    differ = sorted(
        f"{name}: {alerts[name]} recorded, {expected[name]} expected"
        for name in set(alerts) | set(expected)
        if alerts[name] != expected[name]
    )
    print(f"{total:,} signals over {args.series} series, {args.workers} workers, {kills} kill -9s "
          f"in {elapsed:.0f} s")  # fmt: skip
    print(f"signals: {signals:,} recorded of {total:,} sent ({total - signals:,} lost; ids are unique keys)")
    print(f"alerts: {sum(alerts.values())} recorded, {sum(expected.values())} from the same points "
          f"without kills ({spiked} spikes injected); {told} taken up by the pipeline")  # fmt: skip
    print(f"still firing at the end: {firing} (without kills: {expected_firing})")
    for line in differ[:10]:
        print(f"  differs: {line}")
    if not differ:
        print("  every series has the alerts it has without kills")


if __name__ == "__main__":
    asyncio.run(main())
