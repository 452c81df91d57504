"""The document index: persisted, rebuilt from SQLite when missing or foreign, pruned with retention;
Ollama's embedding model through the real client, and the built-in embedder when it is away."""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path

from bot.app import choose_embedder
from bot.settings import Settings
from engine.answers.embed import HashingEmbedder
from engine.answers.question import parse_question
from engine.answers.retrieval import Indexer, Retriever
from engine.signal import make_signal
from storage.documents import DocumentStore
from storage.ollama_model import OllamaEmbedder
from storage.sqlite import SqliteRecord
from storage.vector_index import FaissIndex
from tests.conftest import free_port
from tests.fakes.ollama_api import FakeOllama

NOW = time.time()
TEXTS = [
    "connection pool exhausted on db-1",
    "PSP timeout from acquirer",
    "LDAP sync failed",
    "disk full on /var",
]


async def seeded(path: Path) -> SqliteRecord:
    record = await SqliteRecord.open(path / "sigops.db")
    signals = [
        make_signal(
            series=f"svc{i}.app",
            kind="log",
            text=text,
            ts=NOW - 3600 * (i + 1),
            labels={"service": f"svc{i}"},
        )
        for i, text in enumerate(TEXTS)
    ]
    async with record.transaction() as tx:
        await tx.add_signals([(s, s.ts) for s in signals])
    return record


def retriever(record: SqliteRecord, path: Path, embedder: HashingEmbedder | OllamaEmbedder) -> Retriever:
    docs = DocumentStore(record)
    index = FaissIndex(path / "index" / "docs.faiss", embedder.dim, embedder.name)
    return Retriever(docs, index, embedder, Indexer(docs, index, embedder))


async def top(r: Retriever, question: str) -> str:
    hits = await r.search(parse_question(question, NOW, UTC))
    return hits[0].doc.text


async def test_index_is_saved_reloaded_and_rebuilt_when_missing(tmp_path: Path) -> None:
    record = await seeded(tmp_path)
    first = retriever(record, tmp_path, HashingEmbedder())
    assert "pool exhausted" in await top(first, "pool exhausted errors")
    saved = tmp_path / "index" / "docs.faiss"
    assert saved.exists()
    again = retriever(record, tmp_path, HashingEmbedder())
    assert "PSP timeout" in await top(again, "acquirer timeouts")
    assert again.indexer is not None and again.index.count == 4  # type: ignore[attr-defined]
    saved.unlink()
    rebuilt = retriever(record, tmp_path, HashingEmbedder())
    assert "LDAP" in await top(rebuilt, "ldap sync")
    assert saved.exists()
    await record.close()


async def test_an_index_of_another_embedder_is_rebuilt(tmp_path: Path) -> None:
    record = await seeded(tmp_path)
    await retriever(record, tmp_path, HashingEmbedder(256)).search(parse_question("disk", NOW, UTC))
    other = retriever(record, tmp_path, HashingEmbedder(128))
    assert "disk full" in await top(other, "disk full")
    await record.close()


async def test_retention_removes_documents_from_the_index(tmp_path: Path) -> None:
    record = await seeded(tmp_path)
    r = retriever(record, tmp_path, HashingEmbedder())
    await r.search(parse_question("anything", NOW, UTC))
    assert r.indexer is not None
    assert await r.indexer.prune(NOW - 2.5 * 3600) == 2  # the two oldest logs
    assert r.index.count == 2  # type: ignore[attr-defined]
    texts = {h.doc.text for h in await r.search(parse_question("anything in the last 24 hours", NOW, UTC))}
    assert not any("LDAP" in t or "disk" in t for t in texts)
    await record.close()


async def test_ollama_embeddings_are_used_and_the_builtin_one_stands_in(tmp_path: Path) -> None:
    fake = await FakeOllama(models=("nomic-embed-text",)).start()
    settings = Settings(ollama_host=fake.host, embed_model="nomic-embed-text", data_dir=tmp_path)
    embedder = await choose_embedder(settings)
    assert isinstance(embedder, OllamaEmbedder) and embedder.dim == 16
    record = await seeded(tmp_path)
    await retriever(record, tmp_path, embedder).search(parse_question("pool", NOW, UTC))
    embeds = [body for path, body in fake.requests if path == "/api/embed"]
    assert embeds[-1]["model"] == "nomic-embed-text" and any(
        "pool exhausted" in t for b in embeds for t in b["input"]
    )
    await fake.stop()
    down = Settings(
        ollama_host=f"http://127.0.0.1:{free_port()}", embed_model="nomic-embed-text", data_dir=tmp_path
    )
    assert isinstance(await choose_embedder(down), HashingEmbedder)
    await record.close()


async def test_embedding_goes_in_batches_and_a_slow_embedder_falls_back_to_words(tmp_path: Path) -> None:
    """A first question that builds the index of many documents: batches within the timeout;
    an embedder too slow even for one batch leaves the question answered by words, no traceback."""
    fake = await FakeOllama(models=("nomic-embed-text",)).start()
    embedder = OllamaEmbedder(fake.host, "nomic-embed-text", timeout_s=1.0)
    assert await embedder.probe()
    fake.embed_delay_s = 0.3  # each call well within the 1 s timeout
    vectors = await embedder.embed([f"text {i}" for i in range(200)])
    assert vectors.shape == (200, 16)
    calls = [len(b["input"]) for path, b in fake.requests if path == "/api/embed"][1:]
    assert calls == [64, 64, 64, 8]

    fake.embed_delay_s = 2.0  # now even one batch outlasts the timeout
    record = await seeded(tmp_path)
    r = retriever(record, tmp_path, embedder)
    hits = await r.search(parse_question("connection pool exhausted", NOW, UTC))
    assert hits and "pool exhausted" in hits[0].doc.text  # ranked by words
    await fake.stop()
    await record.close()
