"""Hybrid retrieval for questions: filter by time and service, rank by vectors and words.

`Indexer` keeps the vector index in step with the record (new documents embedded and
added; old ones removed with retention; a full rebuild when the index is missing or
was made by another embedder). `Retriever` takes a parsed question, lets SQLite pick
the documents in its window and services, scores them against the question's vector
(exactly, from the stored vectors, when there are few) and blends in word overlap.
Blocking FAISS work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.answers.embed import Embedder, tokens
from engine.answers.question import Question
from engine.errors import ModelUnavailable

log = logging.getLogger(__name__)

VECTOR_WEIGHT = 0.6
MAX_CANDIDATES = 200_000
_STOP = {
    "the",
    "a",
    "an",
    "on",
    "in",
    "at",
    "of",
    "to",
    "for",
    "and",
    "or",
    "is",
    "was",
    "were",
    "what",
    "why",
    "how",
    "did",
    "does",
    "do",
    "with",
    "since",
    "last",
    "past",
    "hours",
    "hour",
    "day",
    "days",
    "week",
    "this",
    "that",
    "any",
    "anything",
    "which",
    "many",
    "there",
    "it",
    "be",
    "are",
    "me",
    "show",
    "tell",
}


@dataclass(frozen=True, slots=True)
class Doc:
    id: int
    ref: str  # "alert:3f9a2c1b", "anomaly:…", "change:…", "signal:…"
    kind: str
    ts: float
    service: str
    series: str
    text: str

    @property
    def short_id(self) -> str:
        return self.ref.split(":", 1)[1][:8]


@dataclass(frozen=True, slots=True)
class Hit:
    doc: Doc
    score: float
    vector: float
    lexical: float


class DocumentStore(Protocol):
    async def new_documents(self) -> list[Doc]: ...

    async def all_documents(self, after_id: int, limit: int) -> list[Doc]: ...

    async def candidates(
        self, since: float, until: float, services: Sequence[str], limit: int
    ) -> list[int]: ...

    async def documents(self, ids: Sequence[int]) -> list[Doc]: ...

    async def prune(self, before: float) -> list[int]: ...

    async def count(self) -> int: ...


class VectorIndex(Protocol):
    @property
    def count(self) -> int: ...

    def load(self) -> bool: ...

    def save(self) -> None: ...

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def remove(self, ids: Sequence[int]) -> int: ...

    def search(
        self, query: np.ndarray, k: int, candidates: Sequence[int] | None = None
    ) -> list[tuple[int, float]]: ...


REBUILD_RETRY_S = 60.0


class Indexer:
    def __init__(self, store: DocumentStore, index: VectorIndex, embedder: Embedder) -> None:
        self.store = store
        self.index = index
        self.embedder = embedder
        self._ready = False
        self._lock = asyncio.Lock()
        self._retry_at = 0.0  # after a failed build: not before this (monotonic)

    async def sync(self) -> int:
        """Embed and index what was recorded since the last sync; return how many documents.

        When the embedder fails the index is left as it is (questions rank by words) and the
        build is tried again a minute later, not on every question."""
        async with self._lock:
            if not self._ready:
                if time.monotonic() < self._retry_at:
                    return 0
                try:
                    await self._open()
                except ModelUnavailable as exc:
                    self._retry_at = time.monotonic() + REBUILD_RETRY_S
                    log.warning("vector index not built (%s); ranking by words until it is", exc)
                    return 0
            added = 0
            while docs := await self.store.new_documents():
                try:
                    vectors = await self.embedder.embed([d.text for d in docs])
                except ModelUnavailable as exc:  # the documents exist; a rebuild embeds them later
                    log.warning("documents recorded but not embedded: %s", exc)
                    self._ready = False
                    break
                await asyncio.to_thread(self.index.add, [d.id for d in docs], vectors)
                added += len(docs)
            if added:
                await asyncio.to_thread(self.index.save)
            return added

    async def _open(self) -> None:
        stored = await self.store.count()
        loaded = await asyncio.to_thread(self.index.load)
        if not loaded or self.index.count != stored:
            await self.rebuild()
        self._ready = True

    async def rebuild(self) -> int:
        """Re-embed every document and build the index afresh (missing, stale, or compaction)."""
        ids: list[int] = []
        chunks: list[np.ndarray] = []
        after = 0
        total = await self.store.count()
        while docs := await self.store.all_documents(after, 5000):
            chunks.append(await self.embedder.embed([d.text for d in docs]))
            ids += [d.id for d in docs]
            after = docs[-1].id
            if total > 5000:
                log.info("vector index: %d of %d documents embedded", len(ids), total)
        vectors = np.vstack(chunks) if chunks else np.zeros((0, self.embedder.dim), dtype="float32")
        await asyncio.to_thread(self.index.rebuild, np.asarray(ids, dtype="int64"), vectors)
        await asyncio.to_thread(self.index.save)
        log.info("vector index rebuilt: %d documents", len(ids))
        return len(ids)

    async def prune(self, before: float) -> int:
        """Drop documents older than `before` from the record and the index."""
        async with self._lock:
            ids = await self.store.prune(before)
            if ids:
                await asyncio.to_thread(self.index.remove, ids)
                await asyncio.to_thread(self.index.save)
            return len(ids)


class Retriever:
    def __init__(
        self, store: DocumentStore, index: VectorIndex, embedder: Embedder, indexer: Indexer | None = None
    ):
        self.store = store
        self.index = index
        self.embedder = embedder
        self.indexer = indexer

    async def search(self, question: Question, k: int = 12) -> list[Hit]:
        """The documents that best match the question, within its window and services."""
        if self.indexer is not None:
            await self.indexer.sync()
        candidates = await self.store.candidates(
            question.since, question.until, question.services, MAX_CANDIDATES
        )
        if not candidates:
            return []
        pool = max(k * 5, 50)
        try:
            query = (await self.embedder.embed([question.text]))[0]
            found = await asyncio.to_thread(self.index.search, query, pool, candidates)
        except ModelUnavailable as exc:  # no vectors now: rank by words alone
            log.warning("retrieval without vectors: %s", exc)
            found = []
        scores = dict(found)
        if len(found) < min(pool, len(candidates)):  # vectors missing for some: still rank those by words
            scores |= {i: 0.0 for i in candidates[:pool] if i not in scores}
        docs = await self.store.documents(list(scores))
        words = {w for w in tokens(question.text) if w not in _STOP}
        hits = []
        for doc in docs:
            lexical = _overlap(words, doc)
            vector = max(0.0, scores.get(doc.id, 0.0))
            hits.append(Hit(doc, VECTOR_WEIGHT * vector + (1 - VECTOR_WEIGHT) * lexical, vector, lexical))
        hits.sort(key=lambda h: (h.score, h.doc.ts), reverse=True)
        return hits[:k]


def _overlap(words: set[str], doc: Doc) -> float:
    if not words:
        return 0.0
    present = set(tokens(f"{doc.text} {doc.series} {doc.service}"))
    return len(words & present) / len(words)
