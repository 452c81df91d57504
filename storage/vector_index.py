"""The `VectorIndex` port on FAISS (faiss-cpu): document ids are the SQLite `documents` rowids.

Small collections use an exact flat index; from `IVF_FROM` documents a rebuild makes an
IVF index with 8-bit scalar quantisation (a quarter of the memory, fast at a million).
Both keep a map from id to vector, so a filtered search (time window, service) scores
exactly the candidates SQLite picked. Writes are persisted with the embedder's name;
a missing, unreadable or foreign index file means a rebuild from SQLite. Every FAISS
call here is blocking: callers run it off the event loop (`asyncio.to_thread`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

IVF_FROM = 50_000
EXACT_UP_TO = 20_000  # candidate sets up to this size are scored exactly from stored vectors


class FaissIndex:
    def __init__(self, path: Path, dim: int, embedder: str) -> None:
        self.path = path
        self.dim = dim
        self.embedder = embedder
        self._lock = threading.Lock()
        self.index: faiss.Index = self._flat()

    def _flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return "ivf-sq8" if isinstance(self.index, faiss.IndexIVF) else "flat"

    def load(self) -> bool:
        """Read the saved index; False (and an empty index) when it is missing or for another embedder."""
        meta = self.path.with_suffix(".json")
        try:
            info = json.loads(meta.read_text())
            if info.get("embedder") != self.embedder or info.get("dim") != self.dim:
                log.info(
                    "vector index was built with %s; rebuilding for %s", info.get("embedder"), self.embedder
                )
                return False
            index = faiss.read_index(str(self.path))
        except (OSError, ValueError, RuntimeError) as exc:
            log.info("no usable vector index at %s (%s); it will be rebuilt", self.path, exc)
            return False
        if isinstance(index, faiss.IndexIVF):
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self.index = index
        return True

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            faiss.write_index(self.index, str(tmp))
            tmp.replace(self.path)
        self.path.with_suffix(".json").write_text(json.dumps({"embedder": self.embedder, "dim": self.dim}))

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """A fresh index of these vectors: exact when small, IVF-SQ8 from `IVF_FROM`."""
        if len(ids) < IVF_FROM:
            index = self._flat()
        else:
            nlist = int(min(4096, max(256, 4 * np.sqrt(len(ids)))))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            sample = vectors[
                np.random.default_rng(0).choice(len(vectors), min(len(vectors), nlist * 40), replace=False)
            ]
            index.train(sample)
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            index.nprobe = 32
        if len(ids):
            index.add_with_ids(vectors, ids)
        with self._lock:
            self.index = index

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Add or replace these documents' vectors."""
        if not len(ids):
            return
        array = np.asarray(ids, dtype="int64")
        with self._lock:
            self._remove(array)
            self.index.add_with_ids(vectors.astype("float32"), array)

    def remove(self, ids: Sequence[int]) -> int:
        with self._lock:
            return self._remove(np.asarray(ids, dtype="int64"))

    def _remove(self, ids: np.ndarray) -> int:
        if not len(ids) or not self.index.ntotal:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorArray(ids)))

    def search(
        self, query: np.ndarray, k: int, candidates: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """The `k` nearest documents (inner product on unit vectors), among `candidates` if given."""
        vector = query.reshape(1, -1).astype("float32")
        with self._lock:
            if not self.index.ntotal:
                return []
            if candidates is not None and len(candidates) <= EXACT_UP_TO:
                return self._exact(vector, k, np.asarray(candidates, dtype="int64"))
            params = None
            if candidates is not None:
                selector = faiss.IDSelectorBatch(np.asarray(candidates, dtype="int64"))
                params = (
                    faiss.SearchParametersIVF(sel=selector, nprobe=64)
                    if isinstance(self.index, faiss.IndexIVF)
                    else faiss.SearchParameters(sel=selector)
                )
            scores, found = self.index.search(vector, k, params=params)
        return [(int(i), float(s)) for i, s in zip(found[0], scores[0], strict=True) if i >= 0]

    def _exact(self, vector: np.ndarray, k: int, ids: np.ndarray) -> list[tuple[int, float]]:
        if not len(ids):
            return []
        present = ids.tolist()
        try:
            stored = self.index.reconstruct_batch(ids)
        except RuntimeError:  # some candidates are not indexed yet: score the ones that are
            present = [i for i in present if self._has(i)]
            if not present:
                return []
            stored = self.index.reconstruct_batch(np.asarray(present, dtype="int64"))
        scores = stored @ vector[0]
        order = np.argsort(-scores)[:k]
        return [(present[i], float(scores[i])) for i in order]

    def _has(self, doc_id: int) -> bool:
        try:
            self.index.reconstruct(doc_id)
        except RuntimeError:
            return False
        return True

    def memory_bytes(self) -> int:
        """The index's size as FAISS would write it (a fair measure of its memory)."""
        with self._lock:
            return int(faiss.serialize_index(self.index).nbytes)
