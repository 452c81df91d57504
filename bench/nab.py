"""Detection on real labelled data: the NAB dev kit, through `sigops detect`'s own replay.

    .venv/bin/python bench/nab.py [KIT]      # KIT defaults to ../shared/bench/nab_dev

Each file is replayed with the default settings and a fresh detector, oldest row first.
Two result sets are scored with the kit's `score.py` (NAB's rules, threshold tuned per
profile): the `alert` column (1 where an alert opens for a person) and the `score`
column (how surprising each point is). On the real files (categories `real*`) it also
counts alerts outside every labelled window after NAB's warm-up, per series-day, and the
windows with at least one alert in them. bench/detect.py runs this when the kit exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.detection import COMPILED, COMPILED_EPISODES
from engine.detection.detect import Detection
from engine.detection.replay import read_points, replay

KIT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "nab_dev"
PROFILES = ("standard", "lowFP", "lowFN")


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.strip()).timestamp()


def _score(kit: Path, results: Path) -> list[float]:
    """The kit's three normalised scores (standard, lowFP, lowFN) for one result set."""
    out = subprocess.run(
        [sys.executable, str(kit / "score.py"), str(results)], capture_output=True, text=True, check=True
    ).stdout
    last = [line for line in out.splitlines() if line.startswith("NAB_DEV ")][-1]
    return [float(x) for x in last.split()[1:4]]


def run(kit: Path = KIT) -> dict[str, float]:
    """Replay every file, score both columns, print the figures; return them."""
    windows: dict[str, list[list[str]]] = json.loads((kit / "windows.json").read_text())
    false_alerts = days = found = labelled = points = 0.0
    spent = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, spans in sorted(windows.items()):
            with (kit / "data" / name).open() as handle:
                data = read_points(handle)
            started = time.perf_counter()
            rows = list(replay(data, Detection(), series=Path(name).stem))
            spent += time.perf_counter() - started
            points += len(rows)
            for column, index in (("alert", 7), ("score", 2)):
                target = Path(tmp, column, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                lines = ["timestamp,anomaly_score", *(f"{r[0]},{r[index]}" for r in rows)]
                target.write_text("\n".join(lines) + "\n")
            if not name.startswith("real"):
                continue
            probation = min(int(0.15 * len(data)), 750)
            bounds = [(_stamp(a), _stamp(b)) for a, b in spans]
            alerts = [p.ts for p, r in zip(data, rows, strict=True) if r[7] == "1"]
            late = [ts for ts in alerts if ts >= data[probation].ts]
            false_alerts += sum(1 for ts in late if not any(a <= ts <= b for a, b in bounds))
            days += (data[-1].ts - data[probation].ts) / 86400
            found += sum(1 for a, b in bounds if any(a <= ts <= b for ts in alerts))
            labelled += len(bounds)
        alert_scores = _score(kit, Path(tmp, "alert"))
        score_scores = _score(kit, Path(tmp, "score"))
    figures = {
        **{f"alert_{p}": v for p, v in zip(PROFILES, alert_scores, strict=True)},
        **{f"score_{p}": v for p, v in zip(PROFILES, score_scores, strict=True)},
        "false_alerts_per_series_day": false_alerts / days if days else 0.0,
        "windows_found": found,
        "windows": labelled,
    }
    print(
        f"NAB dev kit: {len(windows)} files, {points:,.0f} points, replayed at {points / spent:,.0f} points/s"
        f" ({'compiled' if COMPILED else 'Python source'} detector,"
        f" {'compiled' if COMPILED_EPISODES else 'Python source'} episodes)"
    )
    print(f"{'column':<8}{'standard':>10}{'lowFP':>8}{'lowFN':>8}   (100 perfect, 0 never alerting)")
    print(f"{'alert':<8}" + "".join(f"{v:>{w}.1f}" for v, w in zip(alert_scores, (10, 8, 8), strict=True)))
    print(f"{'score':<8}" + "".join(f"{v:>{w}.1f}" for v, w in zip(score_scores, (10, 8, 8), strict=True)))
    print(
        f"real files: {false_alerts:.0f} alerts outside the labelled windows in {days:.0f} series-days "
        f"= {figures['false_alerts_per_series_day']:.2f} per series-day (target <= 0.1); "
        f"windows with an alert: {found:.0f}/{labelled:.0f}"
    )
    return figures


if __name__ == "__main__":
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else KIT)
