"""Send-rate limits per chat and overall, so a burst never meets a 429 storm.

Telegram's documented limits: about 1 message per second in a chat, 20 per minute in a
group (not in a private chat), 30 per second overall; Slack about 1 per second per
channel. The intervals keep a margin (1.1 s): a strict limiter counting exactly one
second answers 429 to a sender that paces at exactly 1.000 s. `ChatThrottle` keeps
the recent send times and says how long to wait before the next one.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MARGIN_S = 0.1  # added to a documented one-per-second interval


def telegram_group(chat: str) -> bool:
    """Telegram groups, supergroups and channels have negative ids; private chats positive."""
    return chat.startswith("-")


@dataclass(frozen=True, slots=True)
class Limits:
    per_chat_interval_s: float = 1.0 + MARGIN_S
    per_chat_per_minute: int = 20
    overall_per_second: int = 30
    # Which chats the per-minute limit applies to (Telegram: groups only).
    per_minute_applies: Callable[[str], bool] = field(default=lambda chat: True)


TELEGRAM_LIMITS = Limits(1.0 + MARGIN_S, 20, 30, telegram_group)
SLACK_LIMITS = Limits(1.0 + MARGIN_S, 60, 50)


class ChatThrottle:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._chat: defaultdict[str, deque[float]] = defaultdict(deque)
        self._all: deque[float] = deque()
        self._paused: dict[str, float] = {}

    def delay(self, chat: str, now: float) -> float:
        """Seconds until a message may go to `chat` (0: now)."""
        waits = [self._paused.get(chat, 0.0) - now]
        sent = self._chat[chat]
        while sent and sent[0] <= now - 60:
            sent.popleft()
        while self._all and self._all[0] <= now - 1:
            self._all.popleft()
        if sent:
            waits.append(sent[-1] + self.limits.per_chat_interval_s - now)
            if len(sent) >= self.limits.per_chat_per_minute and self.limits.per_minute_applies(chat):
                waits.append(sent[-self.limits.per_chat_per_minute] + 60 - now)
        if len(self._all) >= self.limits.overall_per_second:
            waits.append(self._all[-self.limits.overall_per_second] + 1 - now)
        return max(0.0, *waits)

    def take(self, chat: str, now: float) -> None:
        """Count one message sent to `chat` now."""
        self._chat[chat].append(now)
        self._all.append(now)

    def pause(self, chat: str, until: float) -> None:
        """The platform asked us to wait (retry_after): nothing more to this chat before `until`."""
        self._paused[chat] = max(self._paused.get(chat, 0.0), until)
