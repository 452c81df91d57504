"""Retrieval latency, index memory and rebuild time at 10k, 100k and 1M stored documents.

    .venv/bin/python bench/retrieval.py [--sizes 10000,100000,1000000] [--queries 200]

For each size: a SQLite record with that many documents over 14 days (20 services),
a FAISS index built by `FaissIndex.rebuild` (flat below 50k, IVF-SQ8 above), then
`Retriever.search` for questions with a 24-hour window (all services, and one
service) and a 6-hour window. Latency covers the whole retrieval: SQLite filter, query
embedding, FAISS search, fetching and ranking the documents (no model). A rebuild is
embedding every document (built-in hashing embedder) plus building the index; both
are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.answers.embed import HashingEmbedder  # noqa: E402
from engine.answers.question import parse_question  # noqa: E402
from engine.answers.retrieval import Retriever  # noqa: E402
from storage.documents import DocumentStore  # noqa: E402
from storage.sqlite import SqliteRecord  # noqa: E402
from storage.vector_index import FaissIndex  # noqa: E402

NOW = 1_795_000_000.0
SERVICES = [f"svc{i:02d}" for i in range(20)]
WORDS = (
    "timeout latency error spike deploy rollback queue pool exhausted disk full cpu memory leak retry".split()
)
QUESTIONS = [
    "what spiked in the last 24 hours?",
    "anything odd with svc07 in the last 24 hours?",
    "connection pool exhausted in the past 6 hours",
]


async def fill(record: SqliteRecord, count: int) -> None:
    rng = random.Random(1)
    rows = []
    for i in range(count):
        service = SERVICES[i % len(SERVICES)]
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        ts = NOW - rng.random() * 14 * 86400
        rows.append(
            (f"signal:{i:08x}", "event", ts, service, f"{service}.app", f"event {service}.app: {words}")
        )
    async with record.transaction():
        await record.conn.executemany(
            "INSERT INTO documents (ref, kind, ts, service, series, text) VALUES (?,?,?,?,?,?)", rows
        )


async def measure(size: int, queries: int, embedder: HashingEmbedder) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        record = await SqliteRecord.open(Path(tmp) / "sigops.db")
        started = time.perf_counter()
        await fill(record, size)
        filled = time.perf_counter() - started
        docs = DocumentStore(record)
        chunks, after = [], 0
        started = time.perf_counter()
        while batch := await docs.all_documents(after, 50_000):
            chunks.append(embedder.embed_now([d.text for d in batch]))
            after = batch[-1].id
        vectors = np.vstack(chunks)
        embedded = time.perf_counter() - started
        index = FaissIndex(Path(tmp) / "documents.faiss", embedder.dim, embedder.name)
        started = time.perf_counter()
        index.rebuild(np.arange(1, size + 1, dtype="int64"), vectors)
        rebuild = time.perf_counter() - started
        retriever = Retriever(docs, index, embedder)
        latencies: dict[str, list[float]] = {q: [] for q in QUESTIONS}
        for n in range(queries):
            question = QUESTIONS[n % len(QUESTIONS)]
            parsed = parse_question(question, NOW, __import__("datetime").UTC, SERVICES)
            t0 = time.perf_counter()
            hits = await retriever.search(parsed)
            latencies[question].append((time.perf_counter() - t0) * 1000)
            assert hits, question
        everything = sorted(v for values in latencies.values() for v in values)
        p95 = everything[int(0.95 * len(everything))]
        print(
            f"{size:>9,} docs  [{index.kind}]  fill {filled:.1f}s  rebuild: embed {embedded:.1f}s + "
            f"index {rebuild:.1f}s  index size {index.memory_bytes() / 2**20:.0f} MiB  "
            f"search p50 {statistics.median(everything):.1f} ms  p95 {p95:.1f} ms"
        )
        for question, values in latencies.items():
            values.sort()
            print(
                f"          {question!r}: p50 {statistics.median(values):.1f} ms, "
                f"p95 {values[int(0.95 * len(values))]:.1f} ms"
            )
        await record.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=150)
    args = parser.parse_args()
    embedder = HashingEmbedder()
    sample = [f"event svc01.app: {' '.join(random.choice(WORDS) for _ in range(6))}" for _ in range(5000)]
    t0 = time.perf_counter()
    embedder.embed_now(sample)
    print(f"hashing embedder: {5000 / (time.perf_counter() - t0):,.0f} documents/s on one core")
    for size in (int(s) for s in args.sizes.split(",")):
        await measure(size, args.queries, embedder)


if __name__ == "__main__":
    asyncio.run(main())
