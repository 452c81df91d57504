"""Answers: the embedder, retrieval over the record, the model, and the command core outside serve."""

from __future__ import annotations

import logging
import time

from bot.commands import CommandCore
from bot.parts.notifications import Notifications
from bot.settings import Settings
from engine.alerting.actions import AlertActions
from engine.answers.answer import RetrievalAnswerer
from engine.answers.embed import Embedder, HashingEmbedder
from engine.answers.narrate import ModelAnswerer
from engine.answers.retrieval import Indexer, Retriever
from engine.supervise import Supervisor
from storage.alertmanager_api import AlertmanagerSilences
from storage.documents import DocumentStore
from storage.notify_store import NotifyStore
from storage.ollama_model import OllamaEmbedder, OllamaModel
from storage.record import Record
from storage.vector_index import FaissIndex

log = logging.getLogger(__name__)


def build_narrator(settings: Settings, record: Record, embedder: Embedder | None = None) -> ModelAnswerer:
    """Hybrid retrieval over the record, narrated by Ollama when configured (retrieval-only otherwise)."""
    embedder = embedder or HashingEmbedder()
    docs = DocumentStore(record)
    safe = embedder.name.replace(":", "-").replace("/", "-")
    index = FaissIndex(settings.data_dir / "index" / f"documents-{safe}.faiss", embedder.dim, embedder.name)
    indexer = Indexer(docs, index, embedder)
    retrieval = RetrievalAnswerer(
        record, tz=settings.tz, retriever=Retriever(docs, index, embedder, indexer), names=docs
    )
    model = None
    if settings.ollama_host:
        model = OllamaModel(
            settings.ollama_host,
            settings.ollama_model,
            settings.ollama_timeout_s,
            settings.ollama_num_predict,
        )
    return ModelAnswerer(
        retrieval, model, settings.tz, settings.ollama_timeout_s, first_token_s=settings.ollama_first_token_s
    )


async def choose_embedder(settings: Settings) -> Embedder:
    """Ollama's embedding model when configured and answering; otherwise the built-in one (said once)."""
    if settings.ollama_host and settings.embed_model:
        ollama_embedder = OllamaEmbedder(settings.ollama_host, settings.embed_model)
        if await ollama_embedder.probe():
            return ollama_embedder
        log.warning(
            "embedding model %s on %s not available: using the built-in hashing embedder "
            "(word and spelling overlap, no synonyms)",
            settings.embed_model,
            settings.ollama_host,
        )
    return HashingEmbedder()


def standalone_core(settings: Settings, record: Record, embedder: Embedder | None = None) -> CommandCore:
    """The command core for `sigops chat` and `ask`: the record only (a running `serve` delivers)."""
    store = NotifyStore(record)
    return CommandCore(
        record,
        RetrievalAnswerer(record),
        delivery=store,
        actions=AlertActions(store, time.time, upstream=upstream_silences(settings)),
        chart_dir=settings.data_dir / "charts",
        tz=settings.tz,
        narrator=build_narrator(settings, record, embedder),
    )


def build_core(
    settings: Settings,
    record: Record,
    notifications: Notifications,
    embedder: Embedder,
    supervisor: Supervisor,
) -> CommandCore:
    """The one command core every chat front end calls, with actions that wake the pipeline."""
    return CommandCore(
        record,
        RetrievalAnswerer(record),
        delivery=notifications.store,
        actions=AlertActions(
            notifications.store,
            time.time,
            wake=notifications.dispatcher.wake,
            upstream=upstream_silences(settings),
        ),
        chart_dir=settings.data_dir / "charts",
        tz=settings.tz,
        narrator=build_narrator(settings, record, embedder),
        supervisor=supervisor,
    )


def upstream_silences(settings: Settings) -> AlertmanagerSilences | None:
    return AlertmanagerSilences(settings.alertmanager_url) if settings.alertmanager_url else None
