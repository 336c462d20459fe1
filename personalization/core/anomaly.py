"""Anomalies in the input's event rates: a spike or a drop in one minute's events of a type.

The job counts the events read per minute of event time and per event type (a Flink SQL window
in the JVM, ``pipelines.job``), plus ``ALL`` for every event. Each closed minute is compared with
the same series over the minutes before it with a robust z-score: the distance from the median
in units of the median absolute deviation (scaled by 1.4826, so it estimates a standard
deviation), which a few earlier anomalies cannot drag along as they would a mean. Counts are
Poisson-like, so the scale is at least the square root of the median: a steady series
(deviation 0) does not alert on its ordinary noise.

Minutes with no event at all produce no count upstream; a jump from minute m to m + k means the
minutes between had none, and they are evaluated as zeros (up to the history's length): an
outage of the input is a drop in every series.
"""

from __future__ import annotations

from typing import Any

import math
import statistics
from dataclasses import dataclass, field

from personalization.core.evolvable import evolvable

ALL = "*"  # the series of every event, whatever its type
MINUTE_MS = 60_000
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class RateRules:
    history_minutes: int = 30  # minutes of each series kept as the baseline
    min_history: int = 10      # minutes a series needs before it can alert
    threshold: float = 6.0     # |robust z| above which a minute is anomalous
    min_deviation: int = 10    # ... and at least this many events away from the median


@evolvable
@dataclass(slots=True)
class RateHistory:
    """The trailing counts of every series (oldest first) and the last minute evaluated."""

    last_minute: int | None = None  # start (epoch ms) of the last minute evaluated
    series: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RateAlert:
    kind: str  # "spike" | "drop"
    event_type: str  # or ALL
    minute_start: int
    events: int
    median: float
    scale: float
    z: float

    def as_record(self) -> dict[str, Any]:
        return {"alert": "event_rate", "kind": self.kind, "event_type": self.event_type,
                "minute_start": self.minute_start, "minute_end": self.minute_start + MINUTE_MS,
                "events": self.events, "median": self.median, "scale": round(self.scale, 3), "z": round(self.z, 3)}


def close_minute(history: RateHistory, rules: RateRules, minute_start: int, counts: dict[str, int]) -> list[RateAlert]:
    """Evaluate the minute starting at ``minute_start`` with its ``counts`` per event type (the
    ``ALL`` series is added here), after the empty minutes since the last one; returns the alerts
    and adds the minutes to ``history``."""
    alerts: list[RateAlert] = []
    if history.last_minute is not None:  # the minutes since the last one had no event at all
        first_empty = max(history.last_minute + MINUTE_MS, minute_start - rules.history_minutes * MINUTE_MS)
        for start in range(first_empty, minute_start, MINUTE_MS):
            alerts += _evaluate(history, rules, start, {})
    alerts += _evaluate(history, rules, minute_start, {**counts, ALL: sum(counts.values())})
    return alerts


def _evaluate(history: RateHistory, rules: RateRules, minute_start: int, counts: dict[str, int]) -> list[RateAlert]:
    alerts = []
    for event_type in sorted(set(history.series) | set(counts)):
        past = history.series.setdefault(event_type, [])
        events = counts.get(event_type, 0)
        if len(past) >= rules.min_history:
            median = statistics.median(past)
            scale = max(MAD_TO_SIGMA * statistics.median(abs(x - median) for x in past), math.sqrt(median), 1.0)
            z = (events - median) / scale
            if abs(z) > rules.threshold and abs(events - median) >= rules.min_deviation:
                alerts.append(RateAlert("spike" if z > 0 else "drop", event_type, minute_start, events, median, scale, z))
        past.append(events)
        del past[: max(len(past) - rules.history_minutes, 0)]
        if len(past) == rules.history_minutes and not any(past):
            del history.series[event_type]  # a type gone for the whole history: forgotten (bounded state)
    history.last_minute = minute_start
    return alerts
