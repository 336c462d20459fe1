"""Per-user category affinity with exponential decay in event time, and the cold-start fallback.

An event of type t in category c at time ts adds ``weights[t] * 2 ** (-(T - ts) / half_life)``
to c's score as seen at time T. Scores are stored decayed to ``as_of``, the newest event time
applied, so an event at or after ``as_of`` decays everything to its time first, and an older
(out-of-order) event is added already decayed: any arrival order gives the same scores (up to
float rounding) as long as nothing is evicted. Decay never changes the ranking, only the scale.

The state keeps at most ``max_categories`` scores: after each update the lowest score is
evicted, ties broken by evicting the name that sorts last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from personalization.core.evolvable import positional
from personalization.core.learning.trending import Trending

DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "page_view": 0.5,
    "scroll": 0.5,
    "product_view": 1.0,
    "click": 1.0,
    "favorite": 2.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
})


@dataclass(frozen=True, slots=True)
class InterestRules:
    half_life_ms: int = 3 * 86_400_000
    max_categories: int = 20
    top_k: int = 5
    min_events: int = 5   # users with fewer events get the trending categories
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)


@positional  # per-user state: no dataclass fields() call per pickle, the same pickled form
@dataclass(frozen=True, slots=True)
class Interests:
    as_of: int | None = None
    scores: Mapping[str, float] = field(default_factory=dict)


def add_interest(interests: Interests, category: str, event_type: str, ts: int, rules: InterestRules) -> Interests:
    """The interests after one event; event types without a weight leave them unchanged."""
    weight = rules.weights.get(event_type, 0.0)
    if weight <= 0:
        return interests
    if interests.as_of is None or ts >= interests.as_of:
        factor = 0.0 if interests.as_of is None else _decay(ts - interests.as_of, rules.half_life_ms)
        scores = {c: s * factor for c, s in interests.scores.items()}
        as_of = ts
    else:
        scores = dict(interests.scores)
        weight *= _decay(interests.as_of - ts, rules.half_life_ms)
        as_of = interests.as_of
    scores[category] = scores.get(category, 0.0) + weight
    kept = _ranked(scores)[: rules.max_categories]
    return Interests(as_of, dict(kept))


def top_interests(interests: Interests, k: int) -> list[tuple[str, float]]:
    """Highest scores first (decayed to ``as_of``), ties by name."""
    return _ranked(interests.scores)[:k]


def profile_interests(interests: Interests, events_seen: int, trending: Trending,
                      rules: InterestRules) -> dict[str, Any]:
    """What the profile shows: personal top-k, or trending categories for users with too little
    history (fewer than ``min_events`` events, or no event that carries a category).

    ``score`` is the decayed affinity for ``personal`` and the events in the last hour for
    ``trending``; ``as_of`` is the event time the scores refer to.
    """
    personal = top_interests(interests, rules.top_k)
    if events_seen >= rules.min_events and personal:
        return {"source": "personal", "as_of": interests.as_of,
                "categories": [{"category_id": c, "score": s} for c, s in personal]}
    return {"source": "trending", "as_of": trending.anchor,
            "categories": [{"category_id": c, "score": float(n)} for c, n in trending.top(rules.top_k)]}


def _decay(elapsed_ms: int, half_life_ms: int) -> float:
    factor: float = 2.0 ** (-elapsed_ms / half_life_ms)
    return factor


def _ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
