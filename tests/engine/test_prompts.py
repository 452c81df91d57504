"""The prompt loader: includes shared fragments and fails loudly on a missing variable."""

from __future__ import annotations

import pytest

from prompts import PromptError, render


def test_answer_prompt_includes_the_shared_rules() -> None:
    values = dict(
        question="q?",
        window="w",
        since="s",
        until="u",
        timezone="UTC",
        services="all",
        intent="summary",
        figures="f",
        evidence="e",
    )
    text = render("answer", **values)
    assert (
        "Use ONLY the facts between <context>" in text and "Question: q?" in text and "@include" not in text
    )


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(PromptError, match="needs evidence, figures"):
        render(
            "answer", question="q", window="w", since="s", until="u", timezone="UTC", services="a", intent="i"
        )


def test_an_unknown_template_is_named() -> None:
    with pytest.raises(PromptError, match=r"no prompt template nope\.txt"):
        render("nope")
