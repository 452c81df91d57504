"""Every Redis key and stream name SigOps uses, in one place.

A `Keys` is built once from a prefix (settings `SIGOPS_REDIS_PREFIX`, tests use their
own) and handed to each Redis adapter, so two deployments or test runs sharing a
Redis never see each other's data.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "sigops"
WORKER_GROUP = "sigops-workers"

DEAD_LETTERS_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def stream(self, shard: int) -> str:
        """The stream of one shard of the signals (a series always lands in the same one)."""
        return f"{self.prefix}:signals:{shard}"

    def lease(self, shard: int) -> str:
        """Who owns a shard now: the worker whose id is the value, until it expires."""
        return f"{self.prefix}:lease:{shard}"

    @property
    def dispatcher_lease(self) -> str:
        """Which process runs the alert pipeline and delivery now (one at a time)."""
        return f"{self.prefix}:lease:dispatcher"

    def brief_claim(self, destination: str, slot: float) -> str:
        """Who sends the brief of one slot to one destination (SET NX, expires after a day)."""
        return f"{self.prefix}:brief:{destination}:{int(slot)}"

    @property
    def brief_sent(self) -> str:
        """Hash: destination -> the slot of its last brief."""
        return f"{self.prefix}:brief-sent"

    @property
    def workers(self) -> str:
        """Sorted set of live workers (score: last heartbeat), for sharing out shards."""
        return f"{self.prefix}:workers"

    @property
    def group(self) -> str:
        """The consumer group of the workers reading `signals`."""
        return WORKER_GROUP

    @property
    def dead_letters(self) -> str:
        """Stream of signals that failed processing even one at a time, with the error."""
        return f"{self.prefix}:dead-letters"

    @property
    def detector_state(self) -> str:
        """Hash: series -> packed detector state."""
        return f"{self.prefix}:detector-state"

    @property
    def pull_cursors(self) -> str:
        """Hash: pull source query name -> timestamp it has read up to."""
        return f"{self.prefix}:pull-cursors"
