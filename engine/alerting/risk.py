"""Risk: how much an alert deserves attention now, with each driver shown.

The score is a weighted sum of six drivers in [0, 1]: anomaly magnitude, how long it
has lasted, the severity of its source, breadth (other series of the same service
anomalous at the same time), a change (deploy, flag flip) on the service shortly
before it started, and recency. Every driver is kept with a line a person can read, so
the score is never a black box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from engine.alerting.alerts import Alert
from engine.text import duration

SEVERITY_WEIGHT = {"info": 0.25, "warning": 0.5, "error": 0.75, "critical": 1.0}
CHANGE_WINDOW_S = 1800.0  # a change this long before an alert started counts as related
WEIGHTS = {
    "magnitude": 0.35,
    "duration": 0.10,
    "severity": 0.15,
    "breadth": 0.15,
    "change": 0.15,
    "recency": 0.10,
}


@dataclass(frozen=True, slots=True)
class ChangeRef:
    """A recorded change, as related evidence."""

    id: str
    ts: float
    service: str
    change_type: str
    text: str

    @property
    def phrase(self) -> str:
        """How people say it: "deploy checkout v2.4", not "deploy deploy checkout v2.4"."""
        if self.text.lower().startswith(self.change_type.lower()):
            return self.text
        return f"{self.change_type} {self.text}"


@dataclass(frozen=True, slots=True)
class Driver:
    name: str
    level: float  # in [0, 1]
    text: str

    @property
    def contribution(self) -> float:
        return WEIGHTS[self.name] * self.level


@dataclass(frozen=True, slots=True)
class Context:
    """What an alert is related to, and why it scores the risk it does."""

    risk: float
    drivers: tuple[Driver, ...]
    changes: tuple[str, ...]  # "started 2 min after deploy checkout v2.4"
    other_series: tuple[str, ...]  # other anomalous series of the same service

    def as_dict(self) -> dict[str, object]:
        return {
            "risk": round(self.risk, 3),
            "drivers": [[d.name, round(d.level, 3), d.text] for d in self.drivers],
            "changes": list(self.changes),
            "other_series": list(self.other_series),
        }


def assess(alert: Alert, now: float, changes: Sequence[ChangeRef], others: Sequence[Alert]) -> Context:
    """The risk of `alert` and what it relates to, given the service's changes and open alerts."""
    before = [c for c in changes if alert.started_at - CHANGE_WINDOW_S <= c.ts <= alert.started_at + 60]
    before.sort(key=lambda c: c.ts, reverse=True)
    related_changes = tuple(
        f"started {duration(alert.started_at - c.ts)} after {c.phrase}" for c in before[:3]
    )
    other_series = tuple(sorted({a.series for a in others if a.id != alert.id and a.series != alert.series}))
    lasted = max(0.0, alert.updated_at - alert.started_at)
    idle = max(0.0, now - alert.updated_at)
    drivers = (
        Driver("magnitude", alert.score, f"anomaly score {alert.score:.2f}"),
        Driver("duration", min(1.0, lasted / 900.0), f"lasting {duration(lasted)}"),
        Driver("severity", SEVERITY_WEIGHT.get(alert.severity, 0.5), f"severity {alert.severity}"),
        Driver(
            "breadth",
            min(1.0, len(other_series) / 3.0),
            f"{len(other_series)} other series of {alert.service} anomalous" if other_series else "alone",
        ),
        Driver("change", 1.0 if before else 0.0, related_changes[0] if before else "no change just before"),
        Driver("recency", math.exp(-idle / 3600.0), f"last seen {duration(idle)} ago"),
    )
    risk = sum(d.contribution for d in drivers)
    return Context(min(1.0, risk), drivers, related_changes, other_series)
