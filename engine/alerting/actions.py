"""What people do to alerts from chat: acknowledge, resolve, silence, snooze; each audited.

An alert is referred to by its short id (`3f9a2c1b`) or by its group's id (the one on
the message's buttons, `7e3f5fd028`), which acts on every alert of the group. Each
action changes the alerts in one transaction with its audit entry (who, where, when,
what, state before and after), then wakes the dispatcher so the chat messages are
edited at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from engine.alerting.alerts import UPSTREAM_SOURCES, Alert, own_labels
from engine.alerting.silences import Silence, UpstreamFailed, UpstreamSilencer, make_silence
from engine.text import duration, parse_duration

log = logging.getLogger(__name__)

MAX_SNOOZE_S = 7 * 86400


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted, and from where."""

    platform: str
    user_id: str
    user_name: str
    chat_id: str

    @property
    def label(self) -> str:
        return f"{self.user_name} ({self.platform})"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: float
    platform: str
    user_id: str
    user_name: str
    chat_id: str
    action: str
    target: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did: the alerts as they now are, and a sentence for the chat."""

    message: str
    alerts: tuple[Alert, ...] = ()
    ok: bool = True


Mutation = Callable[[Alert], Alert | None]

# Alerts whose state another system owns: they resolve when it says so.


class ActionStore(Protocol):
    async def change_alerts(
        self, ref: str, mutate: Mutation, actor: Actor, action: str, now: float
    ) -> list[tuple[Alert, Alert]] | None:
        """In one transaction: the alerts `ref` names, each mutated (None: left alone) and audited.
        None when `ref` names no alert."""
        ...

    async def find_alerts(self, ref: str) -> list[Alert]: ...

    async def add_silence(self, silence: Silence) -> None: ...

    async def expire_silence(self, silence_id: str, now: float) -> Silence | None: ...

    async def active_silences(self, now: float) -> list[Silence]: ...

    async def audit(
        self, actor: Actor, action: str, target: str, before: str, after: str, now: float
    ) -> None: ...


class AlertActions:
    def __init__(
        self,
        store: ActionStore,
        clock: Callable[[], float],
        wake: Callable[[], None] | None = None,
        upstream: UpstreamSilencer | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.wake = wake or (lambda: None)
        self.upstream = upstream  # Alertmanager, when SIGOPS_ALERTMANAGER_URL is set

    async def ack(self, actor: Actor, ref: str) -> ActionResult:
        now = self.clock()

        def mutate(a: Alert) -> Alert | None:
            if a.status == "resolved" or a.acked_by:
                return None
            return replace(a, acked_by=actor.label, acked_at=now, version=a.version + 1)

        return await self._change(ref, mutate, actor, "ack", "acknowledged", now)

    async def unack(self, actor: Actor, ref: str) -> ActionResult:
        now = self.clock()

        def mutate(a: Alert) -> Alert | None:
            if a.status == "resolved" or not a.acked_by:
                return None
            return replace(a, acked_by=None, acked_at=None, version=a.version + 1)

        return await self._change(ref, mutate, actor, "unack", "no longer acknowledged", now)

    async def resolve(self, actor: Actor, ref: str, note: str = "") -> ActionResult:
        """Resolve SigOps' own alerts. An alert that Alertmanager or Grafana still fires is theirs
        to resolve: resolving it here would show RESOLVED for a live alert whose next (identical)
        notification is deduplicated, so it is refused with a hint to silence it instead."""
        now = self.clock()
        upstream: list[Alert] = []

        def mutate(a: Alert) -> Alert | None:
            if a.status != "resolved" and a.source in UPSTREAM_SOURCES:
                upstream.append(a)
                return None
            if a.status == "resolved":
                return None
            return replace(
                a,
                status="resolved",
                resolved_at=now,
                updated_at=now,
                resolved_by=actor.label,
                note=note.strip()[:500],
                version=a.version + 1,
            )

        result = await self._change(ref, mutate, actor, "resolve", "resolved", now)
        if not upstream:
            return result
        names = ", ".join(sorted({f"{a.title} [{a.id}]" for a in upstream}))
        hint = (
            f"Not resolved: {names} still fires in {'/'.join(sorted({a.source for a in upstream}))}, "
            f"which resolves it when the condition clears. To stop hearing about it: "
            f"`silence {upstream[0].id} 1h`."
        )
        if result.alerts:
            return replace(result, message=f"{result.message}\n{hint}")
        return ActionResult(hint, ok=False)

    async def snooze(self, actor: Actor, ref: str, length: str) -> ActionResult:
        now = self.clock()
        seconds = parse_duration(length)
        if not 0 < seconds <= MAX_SNOOZE_S:
            raise ValueError(f"{length!r}: snooze for between 1m and 7d")

        def mutate(a: Alert) -> Alert | None:
            if a.status == "resolved":
                return None
            return replace(a, snoozed_until=now + seconds, version=a.version + 1)

        return await self._change(ref, mutate, actor, "snooze", f"snoozed for {duration(seconds)}", now)

    async def silence(self, actor: Actor, matchers: Sequence[str], length: str, comment: str) -> ActionResult:
        """Silence by label matchers, or (one word, an alert or group id) by that alert's series."""
        now = self.clock()
        alerts: list[Alert] = []
        if len(matchers) == 1 and not any(op in matchers[0] for op in ("=", "~")):
            alerts = await self.store.find_alerts(matchers[0])
            if not alerts:
                return ActionResult(f"No alert or group {matchers[0]!r}.", ok=False)
            series = sorted({a.series for a in alerts})
            pattern = "|".join(re.escape(s) for s in series)
            matchers = [f'series=~"{pattern}"'] if len(series) > 1 else [f'series="{series[0]}"']
        silence = make_silence(matchers, length, actor.label, comment, now)
        silence, upstream_note = await self._silence_upstream(silence, alerts, actor)
        await self.store.add_silence(silence)
        await self.store.audit(
            actor,
            "silence",
            silence.id,
            "",
            f"{silence.matcher_text} for {duration(silence.ends_at - now)}"
            + (f": {silence.comment}" if silence.comment else ""),
            now,
        )
        self.wake()
        return ActionResult(
            f"Silenced {silence.matcher_text} for {duration(silence.ends_at - now)} (silence {silence.id})."
            + upstream_note
        )

    async def _silence_upstream(
        self, silence: Silence, alerts: Sequence[Alert], actor: Actor
    ) -> tuple[Silence, str]:
        """The same silence in Alertmanager for the alerts that came from it (else it would go on
        notifying its other receivers); a failure there leaves SigOps' silence standing."""
        theirs = [a for a in alerts if a.source == "alertmanager" and a.status != "resolved"]
        if self.upstream is None or not theirs:
            return silence, ""
        comment = silence.comment or f"silenced from SigOps by {actor.user_name}"
        ids = []
        try:
            for alert in theirs:
                ids.append(
                    await self.upstream.create(
                        own_labels(alert.labels), silence.starts_at, silence.ends_at, actor.label, comment
                    )
                )
        except UpstreamFailed as exc:
            log.warning("Alertmanager did not take the silence %s: %s", silence.id, exc)
            note = f" Alertmanager did not take it ({exc}): its other receivers still get these alerts."
            return replace(silence, upstream_ids=tuple(ids)), note
        return replace(
            silence, upstream_ids=tuple(ids)
        ), f" Also silenced in Alertmanager ({', '.join(ids)})."

    async def unsilence(self, actor: Actor, silence_id: str) -> ActionResult:
        now = self.clock()
        ended = await self.store.expire_silence(silence_id, now)
        if ended is None:
            return ActionResult(f"No active silence {silence_id!r} (see `silences`).", ok=False)
        await self.store.audit(actor, "unsilence", silence_id, ended.matcher_text, "ended", now)
        self.wake()
        note = ""
        if ended.upstream_ids and self.upstream is not None:
            try:
                for upstream_id in ended.upstream_ids:
                    await self.upstream.expire(upstream_id)
                note = " Ended in Alertmanager too."
            except UpstreamFailed as exc:
                log.warning("Alertmanager did not end silence %s: %s", ",".join(ended.upstream_ids), exc)
                note = f" Alertmanager did not end its copy ({exc}); it ends at its own time."
        return ActionResult(f"Silence {silence_id} ({ended.matcher_text}) ended.{note}")

    async def _change(
        self, ref: str, mutate: Mutation, actor: Actor, action: str, done: str, now: float
    ) -> ActionResult:
        changed = await self.store.change_alerts(ref, mutate, actor, action, now)
        if changed is None:
            return ActionResult(
                f"No alert or group {ref!r} (ids are on the alert messages and in `status`).", ok=False
            )
        if not changed:
            return ActionResult(f"Nothing to do: {ref} is already {done}.", ok=True)
        self.wake()
        log.info("%s %s %s (%d alerts)", actor.label, action, ref, len(changed))
        names = ", ".join(after.series for _, after in changed)
        return ActionResult(f"{actor.user_name}: {done} {names}.", tuple(after for _, after in changed))
