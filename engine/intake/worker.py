"""Workers: read the signal stream, detect, record, then acknowledge and announce.

Order matters for "nothing lost, nothing doubled": a batch is recorded in one SQLite
transaction (signals by stable id, so a redelivery is recorded once), only then
acknowledged in Redis, and only then announced. A worker that dies before the ack
leaves its entries pending; a live worker reclaims them after `reclaim_idle_ms`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from engine import metrics
from engine.alerting.alerts import NEW, Alert, AlertChange, AlertPolicy, anomaly_key, decide, keys_involved
from engine.alerting.risk import CHANGE_WINDOW_S, assess
from engine.detection.detect import Anomaly, Detection, Observation
from engine.errors import QueueUnavailable, RecordUnavailable
from engine.intake.ownership import Ownership, shard_of
from engine.ports import (
    AlertSink,
    DetectorStateStore,
    QueuedSignal,
    RecordTransaction,
    SignalQueue,
    SignalRecord,
)
from engine.signal import Signal
from engine.supervise import stopped_within

log = logging.getLogger(__name__)

# Points replayed from the record into one series' state at most, and into all the series of
# one batch (a bound on how long a batch can take: ~7 µs a point).
REPLAY_LIMIT = 2_000
REPLAY_BUDGET = 20_000


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker reads and how patient it is with failures."""

    batch_size: int = 20  # stream entries per read, each up to 100 signals
    block_ms: int = 1000
    reclaim_idle_ms: int = 30_000
    reclaim_every_s: float = 5.0
    state_save_every_s: float = 5.0  # when idle (a sweep may change states); every batch saves its own
    sweep_every_s: float = 30.0  # how often silent series are looked for
    retry_min_s: float = 0.2
    retry_max_s: float = 10.0


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What processing one batch did."""

    read: int
    new_signals: int
    anomalies: int
    alert_changes: list[AlertChange]


class SignalProcessor:
    """Detect → decide → record for one batch. Shared by the worker tasks of a process.

    The lock makes "look at open alerts, decide, commit" atomic within the process;
    across processes the record's unique open-alert index settles races.
    """

    def __init__(
        self,
        record: SignalRecord,
        states: DetectorStateStore,
        detection: Detection,
        policy: AlertPolicy,
    ) -> None:
        self.record = record
        self.states = states
        self.detection = detection
        self.policy = policy
        self._lock = asyncio.Lock()

    async def process(self, entries: Sequence[QueuedSignal]) -> BatchOutcome:
        """Record the batch once, in one transaction; return the alert changes that took effect."""
        async with self._lock, self.record.transaction() as tx:
            # Before this batch is added: what the record holds of a series then is what an
            # earlier worker committed, and only that is replayed into its restored state.
            await self._restore_states(tx, {e.signal.series for e in entries if e.signal.kind == "metric"})
            fresh_ids = await tx.add_signals([(e.signal, e.received_at) for e in entries])
            fresh: list[QueuedSignal] = []
            for entry in entries:
                if entry.signal.id in fresh_ids:
                    fresh.append(entry)
                    fresh_ids.discard(entry.signal.id)  # a repeat inside the batch counts once
            points = [e for e in fresh if e.signal.kind == "metric" and e.signal.value is not None]
            observations: list[Observation] = [
                self.detection.observe(e.signal, e.received_at) for e in points
            ]
            await self._note_heartbeats(tx, entries)
            beats = self.policy.heartbeats
            alert_signals = [
                e.signal
                for e in fresh
                if e.signal.kind == "alert" and e.signal.labels.get("alertname") not in beats
            ]
            keys = keys_involved(observations, alert_signals)
            open_alerts = await tx.open_alerts(keys) if keys else {}
            changes = decide(observations, alert_signals, open_alerts, self.policy)
            changes = await _with_context(tx, changes, time.time())
            anomalies: list[Anomaly] = [o.anomaly for o in observations if o.anomaly is not None]
            await tx.add_anomalies(anomalies)
            applied = await tx.write_alerts(changes)
        return BatchOutcome(
            len(entries), len(fresh), len(anomalies), [c for c in changes if c.alert.id in applied]
        )

    async def _note_heartbeats(self, tx: RecordTransaction, entries: Sequence[QueuedSignal]) -> None:
        """Heartbeat alerts (the Watchdog) are noted when they arrive, never alerted on.

        Alertmanager resends the same firing Watchdog (same start, so the same signal id, which
        the record keeps once): each arrival counts, at the time SigOps received it."""
        latest: dict[str, float] = {}
        for entry in entries:
            signal = entry.signal
            name = signal.labels.get("alertname", "")
            if signal.kind == "alert" and name in self.policy.heartbeats:
                if signal.labels.get("status", "firing") == "firing":
                    latest[name] = max(latest.get(name, 0.0), entry.received_at)
        for name, ts in latest.items():
            await tx.beat(name, ts)

    async def sweep(self, now: float) -> list[AlertChange]:
        """Find series that stopped reporting; record their anomalies and alerts."""
        async with self._lock:
            silent = self.detection.sweep(now)
            if not silent:
                return []
            observations = [Observation(_silence_signal(a), None, a, "opened", False, True) for a in silent]
            async with self.record.transaction() as tx:
                open_alerts = await tx.open_alerts(keys_involved(observations, []))
                changes = decide(observations, [], open_alerts, self.policy)
                changes = await _with_context(tx, changes, now)
                await tx.add_anomalies(silent)
                applied = await tx.write_alerts(changes)
        return [c for c in changes if c.alert.id in applied]

    async def _restore_states(self, tx: RecordTransaction, series: set[str]) -> None:
        """Load the saved state of series this process has not seen, and bring it up to what
        the record holds. A worker killed between a batch's commit and the save of its states
        leaves the record ahead of the saved state (or with no state at all, for a new
        series): that batch comes back, but as signals already recorded, which are not
        observed again. So the series' points recorded after the state's last one are
        replayed into it first (their verdicts are in the record already), and the episodes
        of alerts still firing are held open. A series with no saved state and a longer
        history than the replay takes (its state was lost: Redis restarted empty, or the
        embedded default restarted) relearns from its latest points instead of starting
        from nothing, and a state further behind than the replay takes (Redis came back from
        an old snapshot) catches up on them, the points between skipped: were it to replay the
        first points after it, its next live point would come long after the last it saw, a
        silence that never was (and one read before the latest points would hold back the
        alerts after it). The unknown series of a batch share the replay's budget."""
        unknown = sorted(s for s in series if not self.detection.known(s))
        if not unknown:
            return
        self.detection.restore(await self.states.load(unknown))
        extent = await tx.recorded_extent(unknown)
        limit = min(REPLAY_LIMIT, max(REPLAY_BUDGET // len(unknown), 1))
        for name in unknown:
            last, recorded = self.detection.last_ts(name), extent.get(name)
            if recorded is None or (last is not None and recorded[0] <= last):
                continue  # the record holds nothing of it that the state has not seen (the usual)
            if last is None and recorded[1] > limit:
                points = await tx.latest_points(name, limit)
            else:
                points = await tx.points_after(name, 0.0 if last is None else last, limit + 1)
                if len(points) > limit:  # further behind than a replay takes: catch up on the latest
                    points = await tx.latest_points(name, limit)
                    self.detection.skip_to(name, points[0][0].ts)  # the points between: skipped, not silent
            for signal, received_at in points:
                self.detection.observe(signal, received_at)
        firing = await tx.open_alerts([anomaly_key(s) for s in unknown])
        for alert in firing.values():
            self.detection.resume(alert.series, alert.started_at)

    async def drop_shards(self, shards: frozenset[int], total: int, *, save: bool) -> None:
        """Forget the series of shards this process no longer owns (saving them first if given back)."""
        async with self._lock:
            names = [n for n in self.detection.series_names() if shard_of(n, total) in shards]
            if save and names:
                await self.states.save(self.detection.packed(names))
            self.detection.forget(names)

    async def save_states(self) -> int:
        """Persist detector states changed since the last save; return how many."""
        dirty = self.detection.dirty_states()
        await self.states.save(dirty)
        return len(dirty)


async def _with_context(tx: RecordTransaction, changes: list[AlertChange], now: float) -> list[AlertChange]:
    """Attach risk, related changes and related series to the alerts people will hear about."""

    def worth_context(change: AlertChange) -> bool:
        return change.newsworthy and change.alert.status != "resolved"

    news = [c for c in changes if worth_context(c)]
    if not news:
        return changes
    services = sorted({c.alert.service for c in news})
    since = min(c.alert.started_at for c in news) - CHANGE_WINDOW_S
    recent = await tx.recent_changes(services, since)
    current = {a.id: a for a in await tx.open_alerts_of_services(services)}
    current.update((c.alert.id, c.alert) for c in changes if c.alert.status != "resolved")
    out = []
    for change in changes:
        alert = change.alert
        if worth_context(change):
            others = [a for a in current.values() if a.service == alert.service]
            context = assess(alert, now, [c for c in recent if c.service == alert.service], others)
            details = context.as_dict()
            last = alert.context.get("last_time")  # found when it opened; kept through updates
            if last is None and change.change in NEW:
                before = await tx.last_time(alert)
                last = last_time_of(before, alert) if before is not None else None
            if last is not None:
                details["last_time"] = last
            alert = replace(alert, risk=round(context.risk, 3), context=details)
        out.append(AlertChange(alert, change.change))
    return out


def last_time_of(past: Alert, alert: Alert) -> dict[str, object]:
    """What an alert message says about the similar alert before it (cited by its id); `similar`
    when it is not the same series or service and title, only alike by its title."""
    same = past.group_key == alert.group_key or (past.service == alert.service and past.title == alert.title)
    return {
        "id": past.id,
        "title": past.title,
        "name": past.name,  # the title with the labels that say which one (DiskFull instance=db1)
        "started_at": past.started_at,
        "resolved_at": past.resolved_at or past.updated_at,
        "resolved_by": past.resolved_by or "",
        "note": past.note,
        **({} if same else {"similar": True}),
    }


def _silence_signal(anomaly: Anomaly) -> Signal:
    """The stand-in point a silence is reported at (the series itself sent nothing)."""
    return Signal(
        anomaly.signal_id, anomaly.ts, "sigops", "metric", anomaly.series, None,
        {"service": anomaly.service}, anomaly.explanation, "warning",
    )  # fmt: skip


class Worker:
    """One consumer of the signal stream."""

    def __init__(
        self,
        name: str,
        queue: SignalQueue,
        processor: SignalProcessor,
        sink: AlertSink,
        config: WorkerConfig = WorkerConfig(),
        clock: Callable[[], float] = time.monotonic,
        ownership: Ownership | None = None,
    ) -> None:
        self.name = name
        self.ownership = ownership  # None: read every shard (a single worker)
        self._next_rebalance = 0.0
        self.queue = queue
        self.processor = processor
        self.sink = sink
        self.config = config
        self.clock = clock
        self._next_reclaim = 0.0
        self._taken_over: set[int] = set()  # shards gained whose previous owner's pending entries are due
        self._next_save = clock() + config.state_save_every_s
        self._next_sweep = clock() + config.sweep_every_s
        self.processed = 0

    async def step(self) -> BatchOutcome | None:
        """Reclaim (when due) or read one batch, process, ack, announce."""
        entries: list[QueuedSignal] = []
        shards = await self._owned_shards()
        if shards is not None and not shards:
            await asyncio.sleep(self.config.block_ms / 1000)  # standing by: every shard has an owner
            return None
        now = self.clock()
        if self._taken_over:
            entries = await self._take_over_pending()
        if not entries and now >= self._next_reclaim:
            self._next_reclaim = now + self.config.reclaim_every_s
            entries = await self.queue.reclaim(
                self.name, self.config.reclaim_idle_ms, self.config.batch_size, shards
            )
            if entries:
                log.warning("%s reclaimed %d signals left pending by another worker", self.name, len(entries))
        if not entries:
            entries = await self.queue.read(self.name, self.config.batch_size, self.config.block_ms, shards)
        if not entries:
            await self._maybe_sweep()
            await self._maybe_save_states()
            return None
        started = time.perf_counter()
        try:
            outcome = await self.processor.process(entries)
        except (QueueUnavailable, RecordUnavailable):
            raise
        except Exception:  # a bug or a poison signal: find it rather than retry the batch forever
            log.exception(
                "%s: a batch of %d signals failed; retrying them one by one", self.name, len(entries)
            )
            outcome = await self._process_singly(entries)
        # The detector state goes to Redis before the ack, every batch: a worker killed after
        # this point leaves a state that has seen every signal it acknowledged, and its
        # successor does not relearn (nor re-alert on) what the dead one had already seen.
        await self.processor.save_states()
        await self.queue.ack(entries)
        metrics.WORKER_BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.WORKER_SIGNALS.inc(outcome.read)
        self.processed += outcome.read
        for change in outcome.alert_changes:
            metrics.ALERT_CHANGES.labels(change.change).inc()
            if change.newsworthy:
                await self._announce(change)
        await self._maybe_sweep()
        return outcome

    async def _owned_shards(self) -> list[int] | None:
        """The shards to read now (None: all), rebalancing the leases when due."""
        ownership = self.ownership
        if ownership is None:
            return None
        if self.clock() >= self._next_rebalance:
            self._next_rebalance = self.clock() + ownership.ttl_ms / 3000
            change = await ownership.rebalance()
            if change.released:
                await self.processor.drop_shards(change.released, ownership.shards, save=True)
                await ownership.release(change.released)
            if change.lost:
                log.warning(
                    "%s lost shards %s (lease lapsed); another worker owns them now",
                    self.name,
                    sorted(change.lost),
                )
                await self.processor.drop_shards(change.lost, ownership.shards, save=False)
            if change.gained:
                log.info("%s now owns shards %s", self.name, sorted(ownership.owned))
                self._taken_over |= change.gained  # take over what a previous owner left pending
            self._taken_over &= ownership.owned
        return sorted(ownership.owned)

    async def _take_over_pending(self) -> list[QueuedSignal]:
        """What the previous owner of newly gained shards read and never acknowledged, before any
        newer entry of theirs: those points are then seen in order, and an incident in them is
        alerted on now rather than after `reclaim_idle_ms`. Its lease lapsed, so it has not
        renewed for a lease's time, and it renews every third of one between batches: what it
        read has been idle at least that third. (Were it only stalled, what it then commits
        again is recorded once: signals are unique keys.)"""
        assert self.ownership is not None
        gained = sorted(self._taken_over)
        idle_ms = min(self.config.reclaim_idle_ms, self.ownership.ttl_ms // 3)
        entries = await self.queue.reclaim(self.name, idle_ms, self.config.batch_size, gained)
        if entries:
            log.warning(
                "%s took over %d signals left pending by the previous owner of shards %s",
                self.name, len(entries), gained,
            )  # fmt: skip
        else:
            self._taken_over.clear()
        return entries

    async def _process_singly(self, entries: Sequence[QueuedSignal]) -> BatchOutcome:
        """Process each signal alone; set aside (dead-letter) those that still fail."""
        read = new = anomalies = 0
        changes: list[AlertChange] = []
        for entry in entries:
            try:
                outcome = await self.processor.process([entry])
            except (QueueUnavailable, RecordUnavailable):
                raise
            except Exception as exc:
                log.error("%s: signal %s set aside: %r", self.name, entry.signal.id, exc)
                await self.queue.dead_letter(entry, repr(exc))
                continue
            read += outcome.read
            new += outcome.new_signals
            anomalies += outcome.anomalies
            changes += outcome.alert_changes
        return BatchOutcome(read, new, anomalies, changes)

    async def run(self, stop: asyncio.Event) -> None:
        """Process until `stop` is set, riding out Redis and SQLite outages."""
        delay = self.config.retry_min_s
        failing: str | None = None
        while not stop.is_set():
            try:
                await self.step()
            except (QueueUnavailable, RecordUnavailable) as exc:
                if failing != type(exc).__name__:
                    log.warning(
                        "%s paused: %s (retrying every ≤%.0fs)", self.name, exc, self.config.retry_max_s
                    )
                    failing = type(exc).__name__
                await stopped_within(stop, delay)
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            except Exception:  # never let a worker die silently: log loudly, back off, go on
                log.exception("%s: unexpected error; retrying in %.1fs", self.name, delay)
                failing = "unexpected error"
                await stopped_within(stop, delay)
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            if failing:
                log.warning("%s resumed after %s", self.name, failing)
                failing, delay = None, self.config.retry_min_s
        await self.flush_states()
        if self.ownership is not None:
            try:
                await self.ownership.leave()  # hand the shards over now, not after the lease runs out
            except QueueUnavailable as exc:
                log.warning("%s could not release its shards: %s (they lapse on their own)", self.name, exc)

    async def flush_states(self) -> None:
        """Save detector state now (at shutdown); an outage here only costs relearning."""
        try:
            await self.processor.save_states()
        except QueueUnavailable as exc:
            log.warning("detector state not saved at shutdown: %s", exc)

    async def _maybe_sweep(self) -> None:
        if self.clock() >= self._next_sweep:
            self._next_sweep = self.clock() + self.config.sweep_every_s
            for change in await self.processor.sweep(time.time()):
                await self._announce(change)

    async def _maybe_save_states(self) -> None:
        if self.clock() >= self._next_save:
            self._next_save = self.clock() + self.config.state_save_every_s
            await self.processor.save_states()

    async def _announce(self, change: AlertChange) -> None:
        try:
            await self.sink.notify(change.alert, change.change)
        except Exception:  # a notifier's failure must not stop recording
            log.exception("notifying %s alert %s failed", change.change, change.alert.id)
