"""A `Reply` as Slack Block Kit: mrkdwn escaped, mentions neutralised, within Block Kit's limits."""

from __future__ import annotations

import re
from typing import Any

from bot.callbacks import CallbackSigner
from bot.reply import Reply

SECTION_LIMIT = 3000  # characters of text in one section block
HEADER_LIMIT = 150
MAX_BLOCKS = 50
_MENTION = re.compile(r"@(?=(channel|here|everyone)\b)", re.IGNORECASE)
_SPECIAL = re.compile(r"<(?=[!@#])")


def escape(text: str) -> str:
    """Untrusted text made inert in mrkdwn: &, <, > escaped (so no <!channel> or links), @here broken."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub("@\u2060", text)


def fallback_text(reply: Reply) -> str:
    """The notification text (push, screen readers): the title."""
    return escape(reply.title)[: HEADER_LIMIT * 2] or "SigOps"


def blocks(reply: Reply, signer: CallbackSigner | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if reply.title:
        title = ("⚠️ " if reply.error else "") + reply.title
        out.append(_header(title))
    if reply.fields:
        lines = [f"*{escape(name)}*: {escape(value)}" for name, value in reply.fields]
        out += [_section(chunk) for chunk in _chunks("\n".join(lines), SECTION_LIMIT)]
    if reply.links:
        links = " · ".join(f"<{escape(url)}|{escape(name).replace('|', '/')}>" for name, url in reply.links)
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links[:3000]}]})
    for block in reply.blocks:
        out += [_section(chunk) for chunk in _chunks(escape(block), SECTION_LIMIT)]
    if reply.buttons and signer is not None:
        out.append({
            "type": "actions",
            "block_id": "sigops_actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": b.label[:75]},
                    "action_id": f"sigops_{i}",
                    "value": signer.sign(b.action),
                }
                for i, b in enumerate(reply.buttons)
            ],
        })  # fmt: skip
    if reply.footer:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(reply.footer)[:3000]}]})
    if len(out) > MAX_BLOCKS:
        out = [
            *out[: MAX_BLOCKS - 1],
            _section("… (cut to fit Slack's block limit; /status lists everything)"),
        ]
    return out


def plain(text: str) -> str:
    """Untrusted text for plain_text fields: no markup there, but break special sequences anyway."""
    return _MENTION.sub("@\u2060", _SPECIAL.sub("<\u2060", text))


def _header(text: str) -> dict[str, Any]:
    # Header blocks are plain text, capped at 150 characters.
    text = plain(text)
    clipped = text if len(text) <= HEADER_LIMIT else text[: HEADER_LIMIT - 1] + "…"
    return {"type": "header", "text": {"type": "plain_text", "text": clipped, "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _chunks(text: str, limit: int) -> list[str]:
    """Text cut into pieces of at most `limit`, at line breaks or commas where possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = max(text.rfind("\n", 0, limit), text.rfind(", ", 0, limit) + 1)
        if cut < limit // 2:
            cut = limit
        while "&" in text[max(0, cut - 5) : cut] and ";" not in text[text.rfind("&", 0, cut) : cut]:
            cut -= 1
        pieces.append(text[:cut])
        text = text[cut:].lstrip()
    return [*pieces, text] if text else pieces
