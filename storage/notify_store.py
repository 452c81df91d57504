"""The notification pipeline's durable state in the record: groups, log, outbox, silences.

Runs on the record's database (SQLite or PostgreSQL), in its transactions, so a
dispatcher tick's group states, notification log and outbox rows commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from engine.alerting.actions import Actor, AuditEntry, Mutation
from engine.alerting.alerts import Alert, AlertChange
from engine.alerting.delivery import IN_DOUBT, Delivery, DeliveryProblem, SentMessage
from engine.alerting.notify import GroupState, GroupUpdate, Member, Notification
from engine.alerting.routing import parse_matcher
from engine.alerting.silences import Silence
from storage.database import Database
from storage.record import _ALERT_COLUMNS, Record, _alert_from_row

_DELIVERY_COLUMNS = "id, group_id, platform, chat, version, reason, payload, attempts, error, created_at"


class NotifyStore:
    """The `NotifyStore` and `OutboxStore` ports, and silences, on the record."""

    def __init__(self, record: Record) -> None:
        self.record = record

    # ---- the dispatcher's side ----

    async def live_alerts(self, extra_ids: Sequence[str]) -> list[Alert]:
        rows = await self.record._rows(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' OR told = 0",
            (),
            "reading live alerts",
        )
        seen = {r[0] for r in rows}
        wanted = sorted(set(extra_ids) - seen)
        rows += await self.record._select_in(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id IN ({{marks}})", wanted, "reading told alerts"
        )
        return [_alert_from_row(r) for r in rows]

    async def open_groups(self) -> list[GroupState]:
        rows = await self.record._rows(
            "SELECT id, key, receiver, labels, first_seen, last_sent, members, version "
            "FROM notify_groups WHERE closed = 0",
            (),
            "reading alert groups",
        )
        return [_group_from_row(r) for r in rows]

    async def active_silences(self, now: float) -> list[Silence]:
        rows = await self.record._rows(
            "SELECT id, matchers, starts_at, ends_at, author, comment, created_at, upstream_ids "
            "FROM silences "
            "WHERE ends_at > ? AND expired_at IS NULL ORDER BY ends_at",
            (now,),
            "reading silences",
        )
        return [_silence_from_row(r) for r in rows]

    async def write_groups(self, updates: Sequence[GroupUpdate], now: float) -> None:
        async with self.record.transaction() as tx:
            taken_up = sorted({i for u in updates for i in u.taken_up()})
            if taken_up:
                await self.record._execute_in(
                    "UPDATE alerts SET told = 1 WHERE told = 0 AND id IN ({marks})",
                    taken_up,
                    tx.db,
                    "marking alerts as taken up",
                )
            for u in updates:
                await self._save_group(tx.db, u)
                if u.notification is not None:
                    await self._queue(tx.db, u, now)

    async def _save_group(self, db: Database, u: GroupUpdate) -> None:
        s = u.state
        members = {k: [m.alert_id, m.fingerprint, m.toggles, m.last_toggle] for k, m in s.members.items()}
        await db.execute(
            "INSERT INTO notify_groups (id, key, receiver, labels, first_seen, last_sent, "
            "members, version, closed) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
            "last_sent=excluded.last_sent, members=excluded.members, version=excluded.version, "
            "closed=excluded.closed",
            (
                s.id,
                s.key,
                s.receiver,
                orjson.dumps(dict(s.labels)).decode(),
                s.first_seen,
                s.last_sent,
                orjson.dumps(members).decode(),
                s.version,
                int(u.closed),
            ),
            "saving an alert group",
        )

    async def _queue(self, db: Database, u: GroupUpdate, now: float) -> None:
        """The notification log entry, and one outbox row per destination."""
        note, group_id = u.notification, u.state.id
        assert note is not None
        await db.execute(
            "INSERT INTO notify_log (ts, group_id, version, reason, alerts) VALUES (?,?,?,?,?)",
            (now, group_id, note.version, note.reason, orjson.dumps([a.id for a in note.alerts]).decode()),
            "logging a notification",
        )
        payload = note.to_json().decode()
        rows = [
            (group_id, d.platform, d.chat, note.version, note.reason, payload, "pending", now, now)
            for d in u.destinations
        ]
        await db.executemany(
            "INSERT INTO deliveries (group_id, platform, chat, version, reason, "
            "payload, status, next_at, created_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            rows,
            "writing the outbox",
        )

    async def notification_log(self, since: float, limit: int = 200) -> list[tuple[float, str, int, str]]:
        """(ts, group id, version, reason) of notifications since `since`, newest first."""
        rows = await self.record._rows(
            "SELECT ts, group_id, version, reason FROM notify_log WHERE ts >= ? ORDER BY ts DESC LIMIT ?",
            (since, limit),
            "reading the notification log",
        )
        return [(float(r[0]), r[1], int(r[2]), r[3]) for r in rows]

    async def prune(self, before: float) -> int:
        """Forget closed groups, their messages and settled outbox rows older than `before`."""
        statements = [
            ("DELETE FROM notify_log WHERE ts < ?", (before,)),
            (
                "DELETE FROM deliveries WHERE created_at < ? AND status IN ('sent', 'superseded', 'failed')",
                (before,),
            ),
            (
                "DELETE FROM chat_messages WHERE group_id IN "
                "(SELECT id FROM notify_groups WHERE closed = 1 AND coalesce(last_sent, first_seen) < ?)",
                (before,),
            ),
            ("DELETE FROM notify_groups WHERE closed = 1 AND coalesce(last_sent, first_seen) < ?", (before,)),
            ("DELETE FROM silences WHERE ends_at < ?", (before,)),
        ]
        removed = 0
        async with self.record.transaction() as tx:
            for sql, params in statements:
                removed += await tx.db.execute(sql, params, "pruning notification history")
        return removed

    # ---- what people do ----

    async def find_alerts(self, ref: str, db: Database | None = None) -> list[Alert]:
        """The alert with this short id, or the alerts of the group with this id."""
        rows = await self.record._rows(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (ref,), "finding an alert", db
        )
        if rows:
            return [_alert_from_row(r) for r in rows]
        groups = await self.record._rows(
            "SELECT members FROM notify_groups WHERE id = ?", (ref,), "finding a group", db
        )
        if not groups:
            return []
        ids = [m[0] for m in orjson.loads(groups[0][0]).values()]
        rows = await self.record._select_in(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id IN ({{marks}})",
            ids,
            "reading a group's alerts",
            db=db,
        )
        return [_alert_from_row(r) for r in rows]

    async def change_alerts(
        self, ref: str, mutate: Mutation, actor: Actor, action: str, now: float
    ) -> list[tuple[Alert, Alert]] | None:
        async with self.record.transaction() as tx:
            alerts = await self.find_alerts(ref, tx.db)  # read inside the write transaction: no lost update
            if not alerts:
                return None
            changed = [(a, after) for a in alerts if (after := mutate(a)) is not None]
            await tx.write_alerts([AlertChange(after, "updated") for _, after in changed])
            for before, after in changed:
                await self._audit(tx.db, actor, action, after.id, _state(before), _state(after), now)
        return changed

    async def audit(
        self, actor: Actor, action: str, target: str, before: str, after: str, now: float
    ) -> None:
        async with self.record.transaction() as tx:
            await self._audit(tx.db, actor, action, target, before, after, now)

    async def _audit(
        self, db: Database, actor: Actor, action: str, target: str, before: str, after: str, now: float
    ) -> None:
        await db.execute(
            "INSERT INTO audit (ts, platform, user_id, user_name, chat_id, action, target, before, "
            "after) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                now,
                actor.platform,
                actor.user_id,
                actor.user_name,
                actor.chat_id,
                action,
                target,
                before,
                after,
            ),
            "writing the audit log",
        )

    async def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The latest audit entries, newest first."""
        rows = await self.record._rows(
            "SELECT ts, platform, user_id, user_name, chat_id, action, target, before, after FROM audit "
            "ORDER BY ts DESC, rowid DESC LIMIT ?",
            (limit,),
            "reading the audit log",
        )
        return [AuditEntry(*r) for r in rows]

    # ---- silences ----

    async def add_silence(self, silence: Silence) -> None:
        async with self.record.transaction() as tx:
            await tx.db.execute(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, author, comment, created_at, "
                "upstream_ids) VALUES (?,?,?,?,?,?,?,?)",
                (
                    silence.id,
                    orjson.dumps([str(m) for m in silence.matchers]).decode(),
                    silence.starts_at,
                    silence.ends_at,
                    silence.author,
                    silence.comment,
                    silence.created_at,
                    orjson.dumps(list(silence.upstream_ids)).decode(),
                ),
                "saving a silence",
            )

    async def expire_silence(self, silence_id: str, now: float) -> Silence | None:
        """End a silence now; None when there is no active silence with that id."""
        active = {s.id: s for s in await self.active_silences(now)}
        if silence_id not in active:
            return None
        async with self.record.transaction() as tx:
            await tx.db.execute(
                "UPDATE silences SET expired_at = ? WHERE id = ?", (now, silence_id), "ending a silence"
            )
        return active[silence_id]

    # ---- the deliverer's side ----

    async def due(self, now: float, limit: int) -> list[Delivery]:
        rows = await self.record._rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE status = 'pending' AND next_at <= ? "
            "ORDER BY id LIMIT ?",
            (now, limit),
            "reading the outbox",
        )
        return [_delivery_from_row(r) for r in rows]

    async def recover(self) -> int:
        async with self.record.transaction() as tx:
            return await tx.db.execute(
                "UPDATE deliveries SET status = 'pending', error = ? WHERE status = 'sending'",
                (IN_DOUBT,),
                "recovering the outbox",
            )

    async def chat_messages(
        self, platform: str, chat: str, group_ids: Sequence[str]
    ) -> dict[str, SentMessage]:
        rows = await self.record._select_in(
            "SELECT group_id, message_id, kind FROM chat_messages WHERE group_id IN ({marks}) "
            "AND platform = ? AND chat = ?",
            list(group_ids),
            "reading chat messages",
            after=(platform, chat),
        )
        return {r[0]: SentMessage(r[1], r[2]) for r in rows}

    async def digest_groups(self, platform: str, chat: str, message_id: str) -> list[Notification]:
        rows = await self.record._rows(
            "SELECT d.payload FROM chat_messages m JOIN deliveries d ON d.group_id = m.group_id "
            "AND d.platform = m.platform AND d.chat = m.chat "
            "WHERE m.platform = ? AND m.chat = ? AND m.message_id = ? AND d.status = 'sent' "
            "AND d.version = (SELECT max(version) FROM deliveries x WHERE x.group_id = d.group_id "
            "AND x.platform = d.platform AND x.chat = d.chat AND x.status = 'sent')",
            (platform, chat, message_id),
            "reading a digest",
        )
        return [Notification.from_json(r[0]) for r in rows]

    async def mark_sending(self, ids: Sequence[int], now: float) -> None:
        await self._update_many(
            "UPDATE deliveries SET status = 'sending', attempts = attempts + 1 WHERE id = ?", ids
        )

    async def mark_sent(
        self,
        deliveries: Sequence[Delivery],
        message: SentMessage,
        now: float,
        superseded: Sequence[int] = (),
        replaced: str | None = None,
    ) -> None:
        async with self.record.transaction() as tx:
            db = tx.db
            if replaced is not None and deliveries:
                first = deliveries[0]
                await db.execute(
                    "UPDATE chat_messages SET message_id = ? "
                    "WHERE platform = ? AND chat = ? AND message_id = ?",
                    (message.message_id, first.platform, first.chat, replaced),
                    "renaming a chat message",
                )
            for d in deliveries:
                await db.execute(
                    "UPDATE deliveries SET status = 'sent', message_id = ?, sent_at = ?, error = NULL "
                    "WHERE id = ?",
                    (message.message_id, now, d.id),
                    "marking a delivery sent",
                )
                await db.execute(
                    "INSERT INTO chat_messages (group_id, platform, chat, message_id, kind) "
                    "VALUES (?,?,?,?,?) "
                    "ON CONFLICT (group_id, platform, chat) DO UPDATE SET message_id = excluded.message_id, "
                    "kind = excluded.kind",
                    (d.group_id, d.platform, d.chat, message.message_id, message.kind),
                    "remembering a chat message",
                )
            for stale in superseded:
                await db.execute(
                    "UPDATE deliveries SET status = 'superseded' WHERE id = ? AND status = 'pending'",
                    (stale,),
                    "superseding a delivery",
                )

    async def mark_retry(self, delivery_id: int, next_at: float, error: str) -> None:
        await self._update(
            "UPDATE deliveries SET status = 'pending', next_at = ?, error = ? WHERE id = ?",
            (next_at, error[:500], delivery_id),
        )

    async def mark_failed(self, delivery_id: int, error: str) -> None:
        await self._update(
            "UPDATE deliveries SET status = 'failed', error = ?, sent_at = NULL WHERE id = ?",
            (error[:500], delivery_id),
        )

    async def delivery_problems(self, since: float) -> list[DeliveryProblem]:
        """Chats with deliveries that failed for good since `since`, worst first."""
        rows = await self.record._rows(
            "SELECT platform, chat, count(*), max(created_at), "
            "(SELECT error FROM deliveries x WHERE x.platform = d.platform AND x.chat = d.chat "
            "AND x.status = 'failed' ORDER BY id DESC LIMIT 1) "
            "FROM deliveries d WHERE status = 'failed' AND created_at >= ? GROUP BY platform, chat "
            "ORDER BY count(*) DESC",
            (since,),
            "reading delivery problems",
        )
        return [DeliveryProblem(r[0], r[1], int(r[2]), r[4] or "", float(r[3])) for r in rows]

    async def outbox_backlog(self) -> int:
        rows = await self.record._rows(
            "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'sending')",
            (),
            "counting the outbox",
        )
        return int(rows[0][0])

    async def deliveries_of(self, group_id: str) -> list[tuple[str, str, int, str, str | None]]:
        """(platform, chat, version, status, message id) of one group's deliveries (tests, audit)."""
        rows = await self.record._rows(
            "SELECT platform, chat, version, status, message_id FROM deliveries "
            "WHERE group_id = ? ORDER BY id",
            (group_id,),
            "reading deliveries",
        )
        return [tuple(r) for r in rows]

    async def _update(self, sql: str, params: Sequence[Any]) -> None:
        async with self.record.transaction() as tx:
            await tx.db.execute(sql, params, "updating the outbox")

    async def _update_many(self, sql: str, ids: Sequence[int]) -> None:
        async with self.record.transaction() as tx:
            await tx.db.executemany(sql, [(i,) for i in ids], "updating the outbox")


def _state(alert: Alert) -> str:
    """An alert's state as the audit log shows it."""
    parts: list[str] = [alert.status]
    if alert.acked_by:
        parts.append(f"acked by {alert.acked_by}")
    if alert.snoozed_until:
        parts.append(f"snoozed until {alert.snoozed_until:.0f}")
    if alert.resolved_by:
        parts.append(f"resolved by {alert.resolved_by}" + (f": {alert.note}" if alert.note else ""))
    return ", ".join(parts)


def _group_from_row(row: Sequence[Any]) -> GroupState:
    members = {k: Member(v[0], v[1], int(v[2]), float(v[3])) for k, v in orjson.loads(row[6]).items()}
    return GroupState(row[0], row[1], row[2], orjson.loads(row[3]), row[4], row[5], members, int(row[7]))


def _silence_from_row(row: Sequence[Any]) -> Silence:
    matchers = tuple(parse_matcher(m) for m in orjson.loads(row[1]))
    return Silence(row[0], matchers, row[2], row[3], row[4], row[5], row[6], tuple(orjson.loads(row[7])))


def _delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=int(row[0]),
        group_id=row[1],
        platform=row[2],
        chat=row[3],
        version=int(row[4]),
        reason=row[5],
        notification=Notification.from_json(row[6]),
        attempts=int(row[7]),
        error=row[8],
        created_at=float(row[9]),
    )
