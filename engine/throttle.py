"""Send-rate limits per chat and overall, so a burst never meets a 429 storm.

Telegram allows about 1 message per second in a chat, 20 per minute in a group and
30 per second overall; Slack about 1 per second per channel. `ChatThrottle` keeps the
recent send times and says how long to wait before the next one.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    per_chat_interval_s: float = 1.0
    per_chat_per_minute: int = 20
    overall_per_second: int = 30


TELEGRAM_LIMITS = Limits(1.0, 20, 30)
SLACK_LIMITS = Limits(1.0, 60, 50)


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
            if len(sent) >= self.limits.per_chat_per_minute:
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
