"""The platform-neutral answer of every command; each front end renders it its own way.

Text in a `Reply` is plain and may be untrusted (signal text, model output): renderers
escape it for their platform, so the core never writes markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Button:
    """An action a person can take with one tap; `action` is the command it runs."""

    label: str
    action: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Title, name/value fields, links, paragraphs, buttons and an optional image.

    Renderers show them in that order: what a person needs first (state, severity, labels)
    stays in the first part of a long message, with the buttons."""

    title: str = ""
    blocks: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (label, http(s) URL)
    buttons: tuple[Button, ...] = ()
    image: Path | None = None
    error: bool = False
    footer: str = ""


def error_reply(message: str, usage: str = "") -> Reply:
    """A short, human error (never a traceback)."""
    return Reply(title=message, blocks=(f"Usage: {usage}",) if usage else (), error=True)
