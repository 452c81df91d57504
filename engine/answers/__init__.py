"""Answers: questions about the signals, answered from the record with citations.

Owns reading the question in code (`question`: window, services, intent), hybrid
retrieval over documents (`retrieval`), the figures computed in code and the
retrieval-only answer (`answer`), narration by the model with its checks (`narrate`),
and the built-in embedder (`embed`). It reads what alerting and detection recorded.
"""

from engine.answers.answer import Answer, Evidence, RetrievalAnswerer
from engine.answers.embed import Embedder, HashingEmbedder
from engine.answers.narrate import ModelAnswerer, NarratedAnswer
from engine.answers.question import Question, parse_question
from engine.answers.retrieval import Indexer, Retriever

__all__ = [
    "Answer", "Embedder", "Evidence", "HashingEmbedder", "Indexer", "ModelAnswerer", "NarratedAnswer",
    "Question", "RetrievalAnswerer", "Retriever", "parse_question",
]  # fmt: skip
