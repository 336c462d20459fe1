"""Weighted scores with exponential decay in event time.

A score is ``sum(weight(e) * 0.5 ** ((t - e.ts) / half_life))`` over the user's events e,
read at event time t. It is kept as ``(value, as_of)``: the sum decayed to ``as_of``, the
latest event time folded in. A late event is decayed to ``as_of`` instead of moving it back,
so the result does not depend on arrival order (up to float rounding, which the rounded
read-out hides).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

READ_DIGITS = 6


@dataclass(frozen=True, slots=True)
class Score:
    name: str
    weights: Mapping[str, float]  # event type -> weight
    half_life_ms: int | None  # None: no decay, a plain weighted count


def decay_score(value: float, last_ts: int, new_ts: int, weight: float,
                half_life_ms: int | None) -> tuple[float, int]:
    """Fold one event of ``weight`` at ``new_ts`` into ``value`` (decayed to ``last_ts``)."""
    if half_life_ms is None:
        return value + weight, max(last_ts, new_ts)
    if new_ts >= last_ts:
        return value * 0.5 ** ((new_ts - last_ts) / half_life_ms) + weight, new_ts
    return value + weight * 0.5 ** ((last_ts - new_ts) / half_life_ms), last_ts


def score_at(value: float, last_ts: int, at_ts: int, half_life_ms: int | None) -> float:
    """The score read at ``at_ts``, rounded so float noise never decides a threshold."""
    if half_life_ms is not None:
        value *= 0.5 ** ((at_ts - last_ts) / half_life_ms)
    return round(value, READ_DIGITS)
