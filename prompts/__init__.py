"""Prompt templates as files, rendered by one loader that fails loudly on a missing variable.

A template is `prompts/<name>.txt` with `{variable}` placeholders (`{{`/`}}` for
literal braces). A line `@include <file>` pastes a shared fragment, itself a template.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from engine.errors import SigOpsError

HERE = Path(__file__).parent


class PromptError(SigOpsError):
    """A template is missing, or a variable it uses was not given."""


def render(name: str, **variables: Any) -> str:
    """The template `name` with `variables` filled in; PromptError naming what is missing."""
    text = _load(name, set())
    needed = {field for _, field, _, _ in string.Formatter().parse(text) if field}
    missing = sorted(needed - set(variables))
    if missing:
        raise PromptError(f"prompt {name!r} needs {', '.join(missing)}, which were not given")
    return text.format(**variables)


def _load(name: str, seen: set[str]) -> str:
    if name in seen:
        raise PromptError(f"prompt {name!r} includes itself")
    path = HERE / (name if name.endswith(".txt") else f"{name}.txt")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"no prompt template {path.name} in {HERE}") from exc
    lines = []
    for line in text.splitlines():
        if line.startswith("@include "):
            lines.append(_load(line.removeprefix("@include ").strip(), seen | {name}))
        else:
            lines.append(line)
    return "\n".join(lines)
