"""The question set (`cases.yaml`): what the retrieved context must cite and contain, and must not.

The context checked is exactly what the model would be given (`ModelAnswerer.context`).
Besides a test per case, the suite prints (with -s) the cases fully right, retrieval recall
(cited ids found / ids required), the cases whose context has every required figure, false
claims (things the context must not show) and retrieval-only latency.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from engine.alerting.alerts import Alert, AlertChange
from engine.answers.answer import RetrievalAnswerer
from engine.answers.embed import HashingEmbedder
from engine.answers.narrate import ModelAnswerer
from engine.answers.retrieval import Indexer, Retriever
from engine.detection.detect import Anomaly
from engine.signal import make_signal
from storage.documents import DocumentStore
from storage.sqlite import SqliteRecord
from storage.vector_index import FaissIndex

SPEC = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text())
TZ = ZoneInfo(SPEC["timezone"])
NOW = datetime.strptime(SPEC["now"], "%Y-%m-%d %H:%M").replace(tzinfo=TZ)
# Per case: ids found, ids required, every figure present, false claims, fully right, seconds
RESULTS: list[tuple[int, int, bool, int, bool, float]] = []


def at(when: str) -> float:
    day, clock = when.split()
    hour, minute = map(int, clock.split(":"))
    return (NOW.replace(hour=hour, minute=minute) + timedelta(days=int(day))).timestamp()


async def seed(record: SqliteRecord) -> None:
    world: dict[str, Any] = SPEC["world"]
    alerts = []
    for a in world["alerts"]:
        resolved = at(a["resolved"]) if "resolved" in a else None
        alerts.append(
            Alert(
                id=a["id"],
                group_key=f"anomaly:{a['series']}",
                status="resolved" if resolved else "firing",
                severity=a["severity"],
                title=a["title"],
                series=a["series"],
                service=a["service"],
                source="qa",
                started_at=at(a["started"]),
                updated_at=resolved or at(a["started"]),
                resolved_at=resolved,
                score=a["score"],
                value=float(a["value"]),
                expected=float(a["expected"]),
                explanation=a["explanation"],
                resolved_by=a.get("resolved_by"),
                note=a.get("note", ""),
                acked_by=a.get("acked_by"),
                acked_at=at(a["acked"]) if "acked" in a else None,
            )
        )
    anomalies = [
        Anomaly(
            f"{x['signal']}:robust_z",
            f"{x['signal']}0000",
            at(x["at"]),
            x["series"],
            x["service"],
            float(x["value"]),
            float(x["expected"]),
            float(x["expected"]) * 0.8,
            float(x["expected"]) * 1.2,
            x["score"],
            ("robust_z",),
            f"{x['series']} {x['value']} vs expected {x['expected']}",
        )
        for x in world["anomalies"]
    ]
    signals = [
        make_signal(
            id=c["id"],
            series=f"{c['service']}.deploys",
            kind="change",
            ts=at(c["at"]),
            text=c["text"],
            labels={"service": c["service"], "change_type": c["type"]},
        )
        for c in world["changes"]
    ] + [
        make_signal(
            id=e["id"],
            series=e["series"],
            kind=e["kind"],
            ts=at(e["at"]),
            text=e["text"],
            labels={"service": e["service"]},
            severity="warning",
        )
        for e in world["events"]
    ]
    async with record.transaction() as tx:
        await tx.write_alerts([AlertChange(a, "opened") for a in alerts])
        await tx.add_anomalies(anomalies)
        await tx.add_signals([(s, s.ts) for s in signals])


@pytest.fixture
async def answerer(tmp_path: Path) -> AsyncIterator[ModelAnswerer]:
    path = tmp_path
    record = await SqliteRecord.open(path / "sigops.db")
    await seed(record)
    docs = DocumentStore(record)
    embedder = HashingEmbedder()
    index = FaissIndex(path / "index.faiss", embedder.dim, embedder.name)
    retriever = Retriever(docs, index, embedder, Indexer(docs, index, embedder))
    clock = NOW.timestamp
    retrieval = RetrievalAnswerer(record, clock=clock, tz=TZ, retriever=retriever, names=docs)
    yield ModelAnswerer(retrieval, None, TZ, clock=clock)
    await record.close()


@pytest.mark.parametrize("case", SPEC["cases"], ids=[c["q"] for c in SPEC["cases"]])
async def test_question(answerer: ModelAnswerer, case: dict[str, Any]) -> None:
    started = time.perf_counter()
    found = await answerer.retrieval.answer(case["q"])
    spent = time.perf_counter() - started
    context = "\n".join(answerer.context(found).values())
    cited = [i for i in case.get("cite", []) if f"[{i}]" in context]
    figures = all(f in context for f in case.get("contain", []))
    leaked = [a for a in case.get("absent", []) if a in context]
    right = cited == case.get("cite", []) and figures and not leaked
    RESULTS.append((len(cited), len(case.get("cite", [])), figures, len(leaked), right, spent))
    assert cited == case.get("cite", []), f"missing ids {set(case.get('cite', [])) - set(cited)}\n{context}"
    assert figures, f"missing {[f for f in case.get('contain', []) if f not in context]}\n{context}"
    assert not leaked, f"should not appear: {leaked}\n{context}"


def test_report_recall_and_figure_coverage() -> None:
    """Printed with -s; also a floor, so a regression across many cases shows as one failure."""
    found = sum(r[0] for r in RESULTS)
    wanted = sum(r[1] for r in RESULTS)
    figures = sum(1 for r in RESULTS if r[2])
    false_claims = sum(r[3] for r in RESULTS)
    right = sum(1 for r in RESULTS if r[4])
    seconds = sorted(r[5] for r in RESULTS)
    recall = found / wanted if wanted else 1.0
    share = figures / len(RESULTS) if RESULTS else 1.0
    p50, p95 = seconds[len(seconds) // 2], seconds[int(len(seconds) * 0.95)]
    print(
        f"\nQA: {len(RESULTS)} cases, fully right {right}/{len(RESULTS)} ({right / len(RESULTS):.0%}), "
        f"retrieval recall {recall:.2f} ({found}/{wanted} ids), every required figure in context "
        f"{figures}/{len(RESULTS)}, false claims {false_claims}, retrieval-only latency p50 "
        f"{p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
    )
    assert len(RESULTS) == len(SPEC["cases"]) >= 60
    assert right >= 0.95 * len(RESULTS) and false_claims == 0 and recall >= 0.9 and share >= 0.9
