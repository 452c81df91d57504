"""Silences: label matchers and an end time, with who set them and why."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.alerting.routing import Matcher, matches_all, parse_matcher
from engine.text import parse_duration


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    author: str
    comment: str
    created_at: float
    upstream_ids: tuple[str, ...] = ()  # the same silence in Alertmanager (one per alert silenced)

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.active(now) and matches_all(self.matchers, labels)

    @property
    def matcher_text(self) -> str:
        return " ".join(map(str, self.matchers))


def make_silence(
    matchers: Sequence[str], length: str | float, author: str, comment: str, now: float
) -> Silence:
    """A silence from people's input; ValueError naming the bad matcher or duration."""
    if not matchers:
        raise ValueError('a silence needs at least one matcher, e.g. service="payments"')
    parsed = tuple(parse_matcher(m) for m in matchers)
    seconds = parse_duration(length) if isinstance(length, str) else float(length)
    if seconds <= 0:
        raise ValueError(f"{length!r}: a silence must last some time, e.g. 30m or 2h")
    if seconds > 90 * 86400:
        raise ValueError("a silence can last at most 90 days")
    digest = hashlib.blake2b(f"{parsed}{now}{author}".encode(), digest_size=3).hexdigest()
    return Silence(digest, parsed, now, now + seconds, author, comment.strip(), now)


@dataclass(frozen=True, slots=True)
class UpstreamSilence:
    """A silence as Alertmanager keeps it."""

    id: str
    matcher_text: str
    ends_at: float
    author: str
    comment: str


class UpstreamSilencer(Protocol):
    """Alertmanager's silences (API v2): SigOps' silences of its alerts are made there too."""

    async def create(
        self, labels: Mapping[str, str], starts_at: float, ends_at: float, author: str, comment: str
    ) -> str:
        """A silence matching exactly these labels; its id (UpstreamFailed when it was not made)."""
        ...

    async def expire(self, silence_id: str) -> None: ...

    async def active(self) -> list[UpstreamSilence]: ...


class UpstreamFailed(Exception):
    """Alertmanager did not answer, or refused: the message says which and why."""
