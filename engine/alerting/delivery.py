"""Delivery from the durable outbox to the chats, at least once, edited in place.

Every outbox row (a `Delivery`) was written before anything is sent. The deliverer
marks it `sending`, calls the platform's notifier, then marks it `sent` with the chat's
message id, which later versions of the same group edit. Failures retry with
exponential backoff and jitter, honouring the platform's retry-after; a permanent
error stops at once and shows in `status`.

A process killed between send and mark leaves the row `sending`: on restart it is in
doubt. Edits are simply repeated (idempotent). For a first post the notifier is asked
to `find` the message it may already have sent (Slack can, via message metadata;
Telegram's Bot API cannot read a chat, so there the post is repeated: one duplicate).

Per chat, only the newest version of a group is sent (older pending ones are
superseded), and when more than `burst_posts` new groups wait for one chat they go out
as ONE digest message that is edited as they change, instead of queueing for minutes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine import metrics
from engine.alerting.notify import Leadership, Notification
from engine.alerting.throttle import ChatThrottle
from engine.errors import DeliveryFailed, RecordUnavailable
from engine.failpoints import crash_point
from engine.signal import SEVERITY_RANK

log = logging.getLogger(__name__)

IN_DOUBT = "in doubt: the process stopped while sending"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: one version of one group for one chat."""

    id: int
    group_id: str
    platform: str
    chat: str
    version: int
    reason: str
    notification: Notification
    attempts: int
    error: str | None
    created_at: float

    @property
    def in_doubt(self) -> bool:
        return self.error == IN_DOUBT


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message in a chat that later versions edit: text, photo (caption) or digest."""

    message_id: str  # the platform's id; parts of a long message are comma-separated
    kind: str
    calls: int = field(default=1, compare=False)  # messages sent or edited to get here (for the throttle)


@dataclass(frozen=True, slots=True)
class DeliveryProblem:
    platform: str
    chat: str
    failed: int
    last_error: str
    last_at: float


class ChatNotifier(Protocol):
    """One chat platform (Telegram, Slack, console). Raises DeliveryFailed."""

    platform: str

    async def post(self, chat: str, note: Notification, chart: bytes | None) -> SentMessage:
        """Post a new message for a group (with its chart, if any)."""
        ...

    async def update(self, chat: str, message: SentMessage, note: Notification) -> SentMessage:
        """Edit the group's message in place (and, where the platform threads, reply); return it."""
        ...

    async def find(self, chat: str, group_id: str) -> SentMessage | None:
        """The message already posted for this group, if the platform can tell."""
        ...

    async def digest(
        self, chat: str, notes: Sequence[Notification], message: SentMessage | None
    ) -> SentMessage:
        """Post (or edit) one message that summarises several groups."""
        ...


class OutboxStore(Protocol):
    async def due(self, now: float, limit: int) -> list[Delivery]: ...

    async def recover(self) -> int:
        """Rows left `sending` by a stopped process become pending, in doubt; return how many."""
        ...

    async def chat_messages(
        self, platform: str, chat: str, group_ids: Sequence[str]
    ) -> dict[str, SentMessage]: ...

    async def digest_groups(self, platform: str, chat: str, message_id: str) -> list[Notification]:
        """The newest notification of every group a digest message covers."""
        ...

    async def mark_sending(self, ids: Sequence[int], now: float) -> None: ...

    async def mark_sent(
        self,
        deliveries: Sequence[Delivery],
        message: SentMessage,
        now: float,
        superseded: Sequence[int] = (),
        replaced: str | None = None,
    ) -> None:
        """Mark sent with the message's id; `replaced`: an id the message had before (it grew parts)."""
        ...

    async def mark_retry(self, delivery_id: int, next_at: float, error: str) -> None: ...

    async def mark_failed(self, delivery_id: int, error: str) -> None: ...


ChartMaker = Callable[[Notification], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    timeout_s: float = 15.0
    max_attempts: int = 12
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    burst_posts: int = 3  # more new groups than this waiting for one chat: one digest
    poll_s: float = 0.25


class Deliverer:
    def __init__(
        self,
        store: OutboxStore,
        notifiers: Mapping[str, ChatNotifier],
        throttles: Mapping[str, ChatThrottle],
        clock: Callable[[], float],
        charts: ChartMaker | None = None,
        config: DeliveryConfig | None = None,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.throttles = throttles
        self.clock = clock
        self.charts = charts
        self.config = config or DeliveryConfig()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event, leader: Leadership | None = None) -> None:
        recovered = False
        while not stop.is_set():
            try:
                if leader is None or await leader.check():
                    if not recovered:
                        await self._recover()
                        recovered = True
                    await self.step()
            except RecordUnavailable as exc:
                log.warning("outbox: delivery paused: %s", exc)
            self._wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            await asyncio.wait(waiters, timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def _recover(self) -> None:
        count = await self.store.recover()
        if count:
            log.warning("outbox: %d deliveries were in flight when a process stopped; retrying them", count)

    async def step(self) -> int:
        """Send what is due and allowed now; return how many deliveries were settled."""
        now = self.clock()
        due = await self.store.due(now, limit=1000)
        by_chat: defaultdict[tuple[str, str], list[Delivery]] = defaultdict(list)
        for delivery in due:
            by_chat[(delivery.platform, delivery.chat)].append(delivery)
        done = await asyncio.gather(*(self._serve_chat(p, c, ds) for (p, c), ds in by_chat.items()))
        return sum(done)

    async def _serve_chat(self, platform: str, chat: str, due: list[Delivery]) -> int:
        notifier = self.notifiers.get(platform)
        if notifier is None:
            for d in due:
                await self.store.mark_failed(d.id, f"no {platform} notifier is configured")
            return len(due)
        newest: dict[str, Delivery] = {}
        stale: defaultdict[str, list[int]] = defaultdict(list)
        for d in sorted(due, key=lambda d: d.version):
            if d.group_id in newest:
                stale[d.group_id].append(newest[d.group_id].id)
            newest[d.group_id] = d
        messages = await self.store.chat_messages(platform, chat, list(newest))
        posts = [d for d in newest.values() if d.group_id not in messages]
        edits = [d for d in newest.values() if d.group_id in messages]
        # A post in doubt (a process died after sending it, perhaps) goes alone, so that it is
        # looked for first: inside a digest it would be posted a second time.
        doubtful = [d for d in posts if d.in_doubt]
        posts = [d for d in posts if not d.in_doubt]
        settled = 0
        throttle = self.throttles[platform]
        if len(posts) > self.config.burst_posts:
            if throttle.delay(chat, self.clock()) > 0:
                return 0
            throttle.take(chat, self.clock())
            group_stale = [i for d in posts for i in stale[d.group_id]]
            settled += await self._attempt(notifier, chat, posts, None, group_stale)
            posts = []
        posts.sort(key=lambda d: -SEVERITY_RANK[d.notification.top.severity])
        # Groups that share a message (a digest) are brought up to date with one edit.
        by_message: dict[str, list[Delivery]] = {}
        for d in edits:
            by_message.setdefault(messages[d.group_id].message_id, []).append(d)
        batches = [[d] for d in doubtful + posts] + list(by_message.values())
        for batch in batches:
            if throttle.delay(chat, self.clock()) > 0:
                break  # the next step sends it
            throttle.take(chat, self.clock())
            message = messages.get(batch[0].group_id)
            group_stale = [i for d in batch for i in stale[d.group_id]]
            settled += await self._attempt(notifier, chat, batch, message, group_stale)
        return settled

    async def _attempt(
        self,
        notifier: ChatNotifier,
        chat: str,
        batch: Sequence[Delivery],
        message: SentMessage | None,
        superseded: Sequence[int],
    ) -> int:
        await self.store.mark_sending([d.id for d in batch], self.clock())
        try:
            async with asyncio.timeout(self.config.timeout_s):
                sent = await self._send(notifier, chat, batch, message)
            crash_point("deliver:after-send")
        except DeliveryFailed as exc:
            return await self._failed(notifier.platform, chat, batch, exc)
        except TimeoutError:
            failure = DeliveryFailed(f"no answer within {self.config.timeout_s:.0f}s", retryable=True)
            return await self._failed(notifier.platform, chat, batch, failure)
        except Exception as exc:  # a bug in a notifier or its library: this row retries, the rest go on
            log.exception(
                "outbox: unexpected error sending %s to %s:%s", batch[0].group_id, notifier.platform, chat
            )
            failure = DeliveryFailed(f"unexpected error: {type(exc).__name__}: {exc}", retryable=True)
            return await self._failed(notifier.platform, chat, batch, failure)
        for _ in range(sent.calls - 1):
            self.throttles[notifier.platform].take(chat, self.clock())
        replaced = (
            message.message_id if message is not None and message.message_id != sent.message_id else None
        )
        await self.store.mark_sent(batch, sent, self.clock(), superseded, replaced)
        metrics.DELIVERIES.labels(notifier.platform, "sent").inc(len(batch))
        return len(batch)

    async def _send(
        self, notifier: ChatNotifier, chat: str, batch: Sequence[Delivery], message: SentMessage | None
    ) -> SentMessage:
        if message is not None and message.kind == "digest":
            notes = await self.store.digest_groups(notifier.platform, chat, message.message_id)
            merged = {n.group_id: n for n in notes} | {d.group_id: d.notification for d in batch}
            return await notifier.digest(chat, list(merged.values()), message)
        if len(batch) > 1:
            return await notifier.digest(chat, [d.notification for d in batch], None)
        d = batch[0]
        if message is None and d.in_doubt:
            message = await notifier.find(chat, d.group_id)
            if message is not None:
                log.info("outbox: group %s was already posted to %s; editing it", d.group_id, chat)
        if message is None:
            chart = await self._chart(d.notification)
            return await notifier.post(chat, d.notification, chart)
        return await notifier.update(chat, message, d.notification)

    async def _chart(self, note: Notification) -> bytes | None:
        if self.charts is None:
            return None
        try:
            return await self.charts(note)
        except (RecordUnavailable, ValueError, OSError) as exc:  # a chart is a nice-to-have
            log.warning("no chart for group %s: %s", note.group_id, exc)
            return None
        except Exception:  # a charting bug must not hold the alert back: post it without one
            log.exception("no chart for group %s: unexpected error while drawing it", note.group_id)
            return None

    async def _failed(self, platform: str, chat: str, batch: Sequence[Delivery], exc: DeliveryFailed) -> int:
        now = self.clock()
        if exc.retry_after:
            metrics.RATE_LIMITED.labels(platform).inc()
            self.throttles[platform].pause(chat, now + exc.retry_after)
        settled = 0
        for d in batch:
            attempts = d.attempts + 1
            if not exc.retryable or attempts >= self.config.max_attempts:
                why = "permanent error" if not exc.retryable else f"gave up after {attempts} attempts"
                log.error("outbox: %s to %s:%s failed (%s): %s", d.group_id, platform, chat, why, exc)
                await self.store.mark_failed(d.id, str(exc))
                metrics.DELIVERIES.labels(platform, "failed").inc()
                settled += 1
                continue
            backoff = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempts - 1))
            delay = max(exc.retry_after or 0.0, backoff * random.uniform(0.5, 1.0))
            log.warning(
                "outbox: %s to %s:%s failed (%s); retry in %.1fs", d.group_id, platform, chat, exc, delay
            )
            await self.store.mark_retry(d.id, now + delay, str(exc))
            metrics.DELIVERIES.labels(platform, "retry").inc()
            metrics.RETRY_WAIT_SECONDS.labels(platform).inc(delay)
        return settled
