"""Answers narrated by a local language model from evidence that code retrieved and computed.

The model only narrates: retrieval picks the evidence and computes the figures
(`engine/answer.py`), the prompt (`prompts/answer.txt`) quotes signal text as data,
and the model's text is checked afterwards: a figure that is not in the context is
marked, an evidence id that was not given is marked. When the model is down, slow or
not pulled, the answer is the retrieval-only one, labelled as such, never a hang.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from engine import metrics
from engine.answers.answer import Answer, RetrievalAnswerer
from engine.errors import ModelUnavailable
from prompts import render

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:\.\d+)?")
CITATION = re.compile(r"\[([0-9a-f]{6,12})\]")  # an evidence id as the model cites it
Partial = Callable[[str], Awaitable[None]]


class LanguageModel(Protocol):
    """A chat model that streams its answer (Ollama in production)."""

    name: str

    def stream(self, system: str, user: str) -> AsyncIterator[str]:
        """The answer in pieces; raises ModelUnavailable."""
        ...


@dataclass(frozen=True, slots=True)
class NarratedAnswer:
    text: str
    retrieval: Answer
    mode: str  # "model" or "retrieval-only"
    note: str = ""  # why it is retrieval-only, or what the checks found
    unverified: list[str] = field(default_factory=list)  # figures the model gave that the context lacks
    unknown_ids: list[str] = field(default_factory=list)


class ModelAnswerer:
    """Retrieval first, then the model narrates; any model failure falls back to retrieval-only."""

    def __init__(
        self,
        retrieval: RetrievalAnswerer,
        model: LanguageModel | None,
        tz: tzinfo = UTC,
        timeout_s: float = 90.0,
        clock: Callable[[], float] = time.time,
        first_token_s: float | None = None,
    ) -> None:
        self.retrieval = retrieval
        self.model = model
        self.tz = tz
        self.timeout_s = timeout_s  # the whole answer
        self.first_token_s = min(first_token_s or timeout_s, timeout_s)  # its first word
        self.clock = clock

    async def answer(self, question: str, on_partial: Partial | None = None) -> NarratedAnswer:
        started = time.perf_counter()
        answer = await self._answer(question, on_partial)
        metrics.QUESTION_SECONDS.labels(answer.mode).observe(time.perf_counter() - started)
        return answer

    async def _answer(self, question: str, on_partial: Partial | None) -> NarratedAnswer:
        found = await self.retrieval.answer(question)
        if self.model is None:
            metrics.MODEL_FALLBACKS.labels("no_model").inc()
            return NarratedAnswer(_plain(found), found, "retrieval-only", "no language model is configured")
        if not found.evidence:
            metrics.MODEL_FALLBACKS.labels("no_evidence").inc()
            return NarratedAnswer(_plain(found), found, "retrieval-only", "nothing in the record to narrate")
        context = self.context(found)
        prompt = render("answer", question=question, **context)
        pieces: list[str] = []
        try:
            await self._generate(prompt, pieces, on_partial)
        except TimeoutError:
            waited = (
                f"no first word within {self.first_token_s:g}s"
                if not pieces
                else f"the model did not finish within {self.timeout_s:g}s"
            )
            return self._fallback(found, f"{waited} (the generation was stopped)", "timeout")
        except ModelUnavailable as exc:
            return self._fallback(found, exc.reason + (f" ({exc.hint})" if exc.hint else ""), "unavailable")
        text = "".join(pieces).strip()
        if not text:
            return self._fallback(found, "the model gave an empty answer", "empty")
        if _echoes(text, prompt, {e.id for e in found.evidence}):
            return self._fallback(found, "the model repeated its instructions instead of answering", "echo")
        checked, unverified, unknown = check(
            text, "\n".join(context.values()), {e.id for e in found.evidence}, found.figures
        )
        notes = []
        if unverified:
            notes.append(
                "⚠ figures not found in the record for what they are said of: " + ", ".join(unverified)
            )
        if unknown:
            notes.append("⚠ cited ids that were not in the evidence: " + ", ".join(unknown))
        return NarratedAnswer(checked, found, "model", "; ".join(notes), unverified, unknown)

    async def _generate(self, prompt: str, pieces: list[str], on_partial: Partial | None) -> None:
        """Stream the answer into `pieces` within the first-word and whole-answer deadlines.

        On a deadline the stream is closed before TimeoutError leaves here, which closes the
        request and so stops the generation: the next question is not queued behind it.
        """
        assert self.model is not None
        loop = asyncio.get_running_loop()
        whole = loop.time() + self.timeout_s
        stream = self.model.stream(system="", user=prompt)
        try:
            async with asyncio.timeout(self.first_token_s) as deadline:
                async for piece in stream:
                    if not pieces:
                        deadline.reschedule(whole)
                    pieces.append(piece)
                    if on_partial is not None:
                        await on_partial("".join(pieces))
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    def context(self, found: Answer) -> dict[str, str]:
        """The prompt's variables: the window, scope, computed figures and evidence lines."""
        until = found.until or self.clock()
        since = found.since or until - found.window_s
        evidence = "\n".join(
            f"[{e.id}] {self._when(e.ts)} {e.kind}: {_one_line(e.line)}" for e in found.evidence
        )
        figures = "\n".join([*found.summary, *(f"{k}: {_num(v)}" for k, v in found.figures.items())])
        return {
            "window": found.window or f"last {_hours(found.window_s)}",
            "since": self._when(since),
            "until": self._when(until),
            "timezone": str(self.tz),
            "services": ", ".join(found.services) or "all",
            "intent": found.intent,
            "figures": figures,
            "evidence": evidence,
        }

    def _fallback(self, found: Answer, why: str, reason: str) -> NarratedAnswer:
        log.warning("answering without the model: %s", why)
        metrics.MODEL_FALLBACKS.labels(reason).inc()
        return NarratedAnswer(_plain(found), found, "retrieval-only", f"model unavailable: {why}")

    def _when(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m-%d %H:%M")


# A count the answer states, and the figures that may back it (the rest of a count is checked
# against these, not against any number that happens to be in the context).
_COUNT = re.compile(r"(?<![\w.])(\d+)\s+(alerts?|anomalous points?|anomalies|changes?)\b", re.I)
_COUNT_FIGURES = {"alert": ("alerts", "alerts_firing"), "anomal": ("anomalies",), "change": ("changes",)}


def check(
    text: str, context: str, evidence_ids: set[str], figures: Mapping[str, float] | None = None
) -> tuple[str, list[str], list[str]]:
    """Mark figures absent from the context (`123⚠`), counts that contradict the computed
    figures ("13 alerts" when 12 fired), figures said of the wrong thing (one service's
    duration given to another), and cited ids that were not given."""
    known = {_norm(n) for n in _NUMBER.findall(context)}
    unknown_ids = sorted({i for i in CITATION.findall(text) if i not in evidence_ids})
    wrong = {m.start(1) for m in _COUNT.finditer(text) if not _count_holds(m, figures or {})}
    wrong |= _misattributed(text, context)
    ids = [m.span() for m in CITATION.finditer(text)]  # ids are not figures: keep them whole
    unverified: list[str] = []

    def mark(match: re.Match[str]) -> str:
        number = match.group(0)
        if any(start <= match.start() < end for start, end in ids):
            return number
        if _norm(number) in known and match.start() not in wrong:
            return number
        unverified.append(number)
        return f"{number}⚠"

    return _NUMBER.sub(mark, text), list(dict.fromkeys(unverified)), unknown_ids


# A series name (payments.latency_p99); its first part is the service it belongs to.
_SERIES = re.compile(r"\b[a-z][\w-]*(?:\.[\w-]+)+\b", re.I)
# A sentence or clause: up to . ! ? ; or a line end (a dot inside a name or a number does not end it).
_SENTENCE = re.compile(r"(?:[^.!?;\n]|\.(?=\w))+")


def _entities(line: str, services: set[str]) -> set[str]:
    named = {m.group(0).lower() for m in _SERIES.finditer(line)}
    words = {w.lower() for w in re.findall(r"[A-Za-z][\w-]*", line)}
    return named | {n.split(".", 1)[0] for n in named} | (words & services)


def _misattributed(text: str, context: str) -> set[int]:
    """Positions in `text` of figures the context gives for other things than the sentence
    names: "auth's alert lasted 35 min" when 35 min was payments'. A figure of no one in
    particular (the window's 6 hours) is never counted against a sentence."""
    services = {m.group(0).split(".", 1)[0].lower() for m in _SERIES.finditer(context)}
    owned: dict[str, set[str]] = defaultdict(set)
    anyone: set[str] = set()  # figures on lines that name nothing: the window, totals
    for line in context.splitlines():
        numbers = {_norm(n) for n in _NUMBER.findall(CITATION.sub("", line))}
        entities = _entities(line, services)
        if not entities:
            anyone |= numbers
        for entity in entities:
            owned[entity] |= numbers
    wrong: set[int] = set()
    for sentence in _SENTENCE.finditer(text):
        named = _entities(sentence.group(0), services)
        if not named:
            continue
        theirs = set().union(*(owned[e] for e in named))
        others = set().union(*(numbers for e, numbers in owned.items() if e not in named))
        # Digits inside a cited id may land here too: `check` never marks those.
        for match in _NUMBER.finditer(sentence.group(0)):
            number = _norm(match.group(0))
            if number in others and number not in theirs and number not in anyone:
                wrong.add(sentence.start() + match.start())
    return wrong


def _count_holds(match: re.Match[str], figures: Mapping[str, float]) -> bool:
    noun = match.group(2).lower()
    names = next((v for k, v in _COUNT_FIGURES.items() if noun.startswith(k)), ())
    backing = [figures[n] for n in names if n in figures]
    return not backing or float(match.group(1)) in backing


_RULE_MARKERS = ("<context>", "</context>", "<data>", "</data>", "Rules:", "Use ONLY the facts")


def _echoes(text: str, prompt: str, evidence_ids: set[str]) -> bool:
    """Whether the model repeated its prompt (rules, tags, the rules' example id) as an answer."""
    if any(marker in text for marker in _RULE_MARKERS):
        return True
    example_ids = set(CITATION.findall(render("rules"))) - evidence_ids  # "e.g. [3f9a2c1b]"
    if example_ids & set(CITATION.findall(text)):
        return True
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 30]
    copied = [ln for ln in lines if ln in prompt]
    return len(copied) >= 2 and len(copied) * 2 >= len(lines)


def _norm(number: str) -> str:
    cleaned = number.replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return cleaned
    return f"{value:g}"


def _plain(found: Answer) -> str:
    return "\n".join(found.summary)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


def _num(value: float) -> str:
    return f"{value:g}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} hours"
