"""A `Reply` as Telegram HTML: every untrusted string escaped, split under the size limits.

Each line is rendered as a self-contained unit (its tags open and close on it), and
messages are cut only between units, so every part is valid HTML. Telegram's limits
(4096 characters a message, 1024 a caption) are counted in UTF-16 units, on the HTML
itself, which is never shorter than the text Telegram counts.
"""

from __future__ import annotations

import html
import re

from bot.reply import Reply

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024
_MENTION = re.compile(r"@(?=\w)")
_BACKTICKS = re.compile(r"`([^`]+)`")


def escape(text: str) -> str:
    """Untrusted text made inert: HTML escaped, @mentions broken so nobody is pinged."""
    return _MENTION.sub("@\u2060", html.escape(text, quote=False))


def units(reply: Reply) -> list[str]:
    """The reply as lines of balanced HTML."""
    out: list[str] = []
    if reply.title:
        out.append(("⚠️ " if reply.error else "") + f"<b>{escape(reply.title)}</b>")
    out += [f"<b>{escape(name)}</b>: {_code(escape(value))}" for name, value in reply.fields]
    if reply.links:
        out.append(
            " · ".join(
                f'<a href="{html.escape(url, quote=True)}">{escape(name)}</a>' for name, url in reply.links
            )
        )
    for block in reply.blocks:
        out += [_code(escape(line)) for line in block.splitlines() if line.strip()]
    if reply.footer:
        out.append(f"<i>{escape(reply.footer)}</i>")
    return out


def _code(line: str) -> str:
    """`whoami` as code, as Markdown writes it (Telegram's HTML would show the backticks)."""
    return _BACKTICKS.sub(r"<code>\1</code>", line)


def tg_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split(reply: Reply, first_limit: int = MESSAGE_LIMIT, limit: int = MESSAGE_LIMIT) -> list[str]:
    """The reply as message parts: the first within `first_limit` (a caption), the rest within `limit`."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for unit in _fitting(units(reply), min(first_limit, limit)):
        cap = first_limit if not parts else limit
        extra = tg_len(unit) + (1 if current else 0)
        if current and size + extra > cap:
            parts.append("\n".join(current))
            current, size = [], 0
            extra = tg_len(unit)
        current.append(unit)
        size += extra
    if current or not parts:
        parts.append("\n".join(current))
    return parts


def _fitting(lines: list[str], limit: int) -> list[str]:
    """Lines no longer than `limit`: a long plain line is cut at spaces (tags only ever wrap short lines)."""
    out: list[str] = []
    for line in lines:
        while tg_len(line) > limit:
            cut = line.rfind(", ", 0, limit - 20)
            cut = cut + 1 if cut > limit // 2 else limit - 20
            while "&" in line[max(0, cut - 6) : cut] and ";" not in line[line.rfind("&", 0, cut) : cut]:
                cut -= 1  # never split an entity such as &amp;
            out.append(line[:cut])
            line = line[cut:].lstrip()
        out.append(line)
    return out
