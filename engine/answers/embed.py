"""Text embeddings. The built-in `HashingEmbedder` needs no model and no network.

It hashes words, word pairs and character 4-grams (which tolerate small typos and
split names like `payments.latency_p99` into parts) into a fixed-size signed vector,
log-weighted and unit-length. It knows no synonyms: "slow" does not find "latency".
That is why retrieval blends it with lexical matching and filters by time and service
first; an Ollama embedding model (`SIGOPS_EMBED_MODEL`) understands meaning better.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from itertools import pairwise
from typing import Protocol

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text (float32)."""
        ...


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class HashingEmbedder:
    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_now(texts)

    def embed_now(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype="float32")
        for row, text in enumerate(texts):
            words = tokens(text)
            features = [*words, *(f"{a} {b}" for a, b in pairwise(words))]
            features += [f"#{w[i : i + 4]}" for w in words if len(w) > 4 for i in range(len(w) - 3)]
            counts: dict[int, float] = {}
            for feature in features:
                h = zlib.crc32(feature.encode())
                slot = h % self.dim
                counts[slot] = counts.get(slot, 0.0) + (1.0 if h & 0x80000000 else -1.0)
            for slot, value in counts.items():
                out[row, slot] = np.sign(value) * np.log1p(abs(value))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms
