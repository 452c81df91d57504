"""Send pacing within Telegram's documented limits, with a margin a strict limiter accepts."""

from __future__ import annotations

from engine.alerting.throttle import TELEGRAM_LIMITS, ChatThrottle


def sends_in_a_minute(throttle: ChatThrottle, chat: str) -> int:
    now, sent = 0.0, 0
    while now < 60:
        wait = throttle.delay(chat, now)
        if wait:
            now += wait
            continue
        throttle.take(chat, now)
        sent += 1
    return sent


def test_a_group_gets_at_most_20_a_minute_a_private_chat_one_every_1_1_s() -> None:
    assert sends_in_a_minute(ChatThrottle(TELEGRAM_LIMITS), "-1001234") == 20
    assert sends_in_a_minute(ChatThrottle(TELEGRAM_LIMITS), "42") == 55  # 60 s / 1.1 s, not 20


def test_consecutive_sends_to_one_chat_keep_more_than_a_second_apart() -> None:
    throttle = ChatThrottle(TELEGRAM_LIMITS)
    throttle.take("42", 100.0)
    assert throttle.delay("42", 101.0) > 0 and throttle.delay("42", 101.1) == 0
