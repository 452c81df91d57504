"""The `LanguageModel` port on a local Ollama server, through the official `ollama` AsyncClient."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import numpy as np
import ollama

from engine.errors import ModelUnavailable


class OllamaModel:
    def __init__(self, host: str, model: str, timeout_s: float = 90.0, num_predict: int = 300) -> None:
        self.host = host
        self.name = model
        self.num_predict = num_predict
        self.client = ollama.AsyncClient(host=host, timeout=timeout_s)

    async def stream(self, system: str, user: str) -> AsyncIterator[str]:
        """The answer in pieces. Closing this generator early (a caller's timeout) closes the
        HTTP stream at once, and Ollama stops generating: nothing is left running."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        options = {"temperature": 0.1, "num_predict": self.num_predict}
        try:
            parts = await self.client.chat(model=self.name, messages=messages, stream=True, options=options)
            try:
                async for part in parts:
                    content = part.message.content if part.message else None
                    if content:
                        yield content
            finally:  # close the response now, not when the garbage collector gets to it
                close = getattr(parts, "aclose", None)
                if close is not None:
                    await close()
        except ollama.ResponseError as exc:
            if exc.status_code == 404 or "not found" in str(exc.error).lower():
                raise ModelUnavailable(
                    f"the model {self.name} is not pulled on {self.host}", f"run `ollama pull {self.name}`"
                ) from exc
            raise ModelUnavailable(f"Ollama answered {exc.status_code}: {exc.error}") from exc
        except (ConnectionError, httpx.ConnectError) as exc:
            raise ModelUnavailable(f"Ollama is not reachable at {self.host}") from exc
        except httpx.TimeoutException as exc:
            raise ModelUnavailable(f"Ollama at {self.host} timed out") from exc
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"Ollama at {self.host} failed: {exc!r}") from exc


EMBED_BATCH = 64  # texts per embed call: one call per batch, each within the timeout


class OllamaEmbedder:
    """The `Embedder` port on Ollama's embed API (e.g. `nomic-embed-text`)."""

    def __init__(self, host: str, model: str, timeout_s: float = 30.0) -> None:
        self.host = host
        self.model = model
        self.name = f"ollama:{model}"
        self.dim = 0
        self.client = ollama.AsyncClient(host=host, timeout=timeout_s)

    async def probe(self) -> bool:
        """Whether the model answers; learns its dimension."""
        try:
            self.dim = int((await self.embed(["dimension probe"])).shape[1])
        except ModelUnavailable:
            return False
        return True

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for `texts`, embedded in batches of EMBED_BATCH (a long list is many calls)."""
        batches = [list(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)] or [[]]
        found: list[list[float]] = []
        for batch in batches:
            found += await self._embed_batch(batch) if batch else []
        vectors = (
            np.asarray(found, dtype="float32").reshape(len(found), -1) if found else np.zeros((0, self.dim))
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (vectors / norms).astype("float32")

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        try:
            response = await self.client.embed(model=self.model, input=batch)
        except ollama.ResponseError as exc:
            raise ModelUnavailable(
                f"Ollama embed failed ({exc.status_code}): {exc.error}",
                f"run `ollama pull {self.model}`" if exc.status_code == 404 else "",
            ) from exc
        except httpx.TimeoutException as exc:
            raise ModelUnavailable(f"Ollama at {self.host} did not embed {len(batch)} texts in time") from exc
        except (ConnectionError, httpx.HTTPError) as exc:
            raise ModelUnavailable(f"Ollama is not reachable at {self.host}") from exc
        return [list(v) for v in response.embeddings]
