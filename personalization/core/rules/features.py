"""Features: named aggregates of a user's events, read from explicit inputs.

The rules engine never looks at Flink or at ``UserState``: the caller fills a
``FeatureInputs`` with the aggregates that ``Requirements`` lists (only those the rules use),
so feature values are a pure function of that input.

Spans: ``session`` is the session holding the user's latest event (open or closed);
``lifetime`` is everything; a window of size W is ``(anchor - W, anchor]`` where the anchor
is the user's latest event time (the rolling windows' own anchor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from personalization.core.rules.expressions import Type, Value

SESSION = "session"
LIFETIME = "lifetime"
NUMERIC_FIELDS = ("dwell_ms", "scroll_depth")
TEXT_FIELDS = ("category_id", "item_id")
AGGREGATIONS = ("count", "distinct", "last", "max", "sessions", "sum")


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Aggregates over one span; a missing key means no event had it (read as 0, or "" for text)."""

    counts: Mapping[str, int] = field(default_factory=dict)  # events per event type
    sessions: int = 0  # sessions with at least one event in the span, the open one included
    sums: Mapping[str, float] = field(default_factory=dict)  # numeric field -> sum
    maxima: Mapping[str, float] = field(default_factory=dict)  # numeric field -> max
    last: Mapping[str, Value] = field(default_factory=dict)  # field -> value on the latest event having it
    distinct: Mapping[str, int] = field(default_factory=dict)  # field -> number of distinct values


@dataclass(frozen=True, slots=True)
class FeatureInputs:
    session: Aggregates = Aggregates()
    lifetime: Aggregates = Aggregates()
    windows: Mapping[int, Aggregates] = field(default_factory=dict)  # window size in ms -> aggregates


class Need(NamedTuple):
    """One aggregate the inputs must provide: ``("count", None)`` is the counts per event type."""

    agg: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Requirements:
    """Exactly what the rules read, so the caller fills (and keeps state for) nothing else."""

    session: frozenset[Need]
    lifetime: frozenset[Need]
    windows: Mapping[int, frozenset[Need]]


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    agg: str
    over: str | int  # SESSION, LIFETIME or a window size in ms
    event_types: tuple[str, ...] = ()  # count only; () counts every event
    field: str | None = None

    @property
    def type(self) -> Type:
        return Type.STRING if self.agg == "last" and self.field in TEXT_FIELDS else Type.NUMBER

    @property
    def need(self) -> Need:
        return Need(self.agg, self.field)

    def value(self, inputs: FeatureInputs) -> Value:
        if isinstance(self.over, int):
            span = inputs.windows[self.over]
        elif self.over == SESSION:
            span = inputs.session
        else:
            span = inputs.lifetime
        if self.agg == "count":
            if self.event_types:
                return sum(span.counts.get(t, 0) for t in self.event_types)
            return sum(span.counts.values())
        if self.agg == "sessions":
            return span.sessions
        if self.agg == "last":
            return span.last.get(self.field or "", "" if self.type == Type.STRING else 0)
        source = {"sum": span.sums, "max": span.maxima, "distinct": span.distinct}[self.agg]
        return source.get(self.field or "", 0)


def requirements(features: tuple[Feature, ...]) -> Requirements:
    session: set[Need] = set()
    lifetime: set[Need] = set()
    windows: dict[int, set[Need]] = {}
    for feature in features:
        if isinstance(feature.over, int):
            windows.setdefault(feature.over, set()).add(feature.need)
        elif feature.over == SESSION:
            session.add(feature.need)
        else:
            lifetime.add(feature.need)
    return Requirements(frozenset(session), frozenset(lifetime),
                        {size: frozenset(needs) for size, needs in sorted(windows.items())})
