"""The aggregates that rules read, kept per user from the user's events in event-time order.

The rules engine reads ``FeatureInputs``: aggregates over the session of the user's latest
event, over the lifetime, and over rolling windows ending at that event. ``UserLogic`` gives
the events here in event-time order (it releases them as the watermark passes them), so each
step sees exactly what a sorted stream would show at that event, whatever the arrival order:

- **session**: greedy split on ``session_gap`` / ``max_session_length``, as ``core.sessions``;
- **lifetime**: everything given so far;
- **windows** of every size in ``time.windows.sizes``, ``(t - W, t]`` at the resolution of the
  window's buckets (as ``core.windows``), including the number of sessions with at least one
  event in the window: each session is counted in the bucket of its latest event.

All windows are kept for every user whatever the current rules read, so a rules update that
starts reading another window (or sums instead of counts) finds its history there.

An event behind the latest one given (late beyond the out-of-orderness, within the allowed
lateness) still updates counts, sums, maxima and "last" values where it falls; it joins the
current session if it is within a session gap before its start, but it does not re-split
sessions the rules have moved past (the ``sessions`` topic does that, with revisions).

Memory is bounded: windows keep at most ``buckets`` buckets; ``distinct`` is only offered
over a session (a lifetime or window of distinct ids would grow without bound).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from personalization.core.evolvable import evolvable
from personalization.core.rules import Aggregates, FeatureInputs, Requirements, RuleSet, RulesError
from personalization.core.rules.features import LIFETIME, NUMERIC_FIELDS, SESSION, TEXT_FIELDS
from personalization.core.sessions import SessionEvent, SessionRules
from personalization.core.windows import window_name

FIELDS = NUMERIC_FIELDS + TEXT_FIELDS
# What the job keeps per span; checked against the rules when they are loaded.
PROVIDED = {
    SESSION: frozenset({"count", "sum", "max", "last", "distinct"}),
    LIFETIME: frozenset({"count", "sessions", "sum", "max", "last"}),
    "window": frozenset({"count", "sessions", "sum", "max", "last"}),
}


@evolvable
@dataclass(slots=True)
class Acc:
    """Counts per event type, sums and maxima of numeric fields, latest value of every field."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, int | float] = field(default_factory=dict)  # ints stay ints: the profile renders them so
    maxima: dict[str, int | float] = field(default_factory=dict)
    last: dict[str, tuple[int, str | int | float]] = field(default_factory=dict)  # field -> (ts, value)

    def add(self, event: SessionEvent) -> None:
        ts, _, event_type, item_id, category_id, scroll_depth, dwell_ms = event
        counts = self.counts
        counts[event_type] = counts.get(event_type, 0) + 1
        for name, value in (("dwell_ms", dwell_ms), ("scroll_depth", scroll_depth)):
            if value is not None:
                self.sums[name] = self.sums.get(name, 0) + value
                if value > self.maxima.get(name, -1):
                    self.maxima[name] = value
        last = self.last
        for name, latest in (("item_id", item_id), ("category_id", category_id),
                             ("dwell_ms", dwell_ms), ("scroll_depth", scroll_depth)):
            if latest is not None and (name not in last or ts >= last[name][0]):
                last[name] = (ts, latest)


@evolvable
@dataclass(slots=True)
class Window:
    """One rolling window: an ``Acc`` and a session count per time bucket."""

    size_ms: int
    width_ms: int
    buckets: dict[int, Acc] = field(default_factory=dict)
    sessions: dict[int, int] = field(default_factory=dict)  # bucket of a session's latest event -> sessions
    pruned_to: int | None = None  # the floor of the last pruning

    def floor(self, anchor: int) -> int:
        """The newest bucket outside the window ending at ``anchor``."""
        return anchor // self.width_ms - self.size_ms // self.width_ms

    def add(self, event: SessionEvent, anchor: int) -> None:
        bucket = event.ts // self.width_ms
        if bucket > self.floor(anchor):
            acc = self.buckets.get(bucket)
            if acc is None:
                acc = self.buckets[bucket] = Acc()
            acc.add(event)

    def move_session(self, old_end: int | None, new_end: int, anchor: int) -> None:
        """Count a session in the bucket of its latest event (moving it there from ``old_end``'s)."""
        if old_end is not None:
            old = old_end // self.width_ms
            if old in self.sessions:
                self.sessions[old] -= 1
                if not self.sessions[old]:
                    del self.sessions[old]
        bucket = new_end // self.width_ms
        if bucket > self.floor(anchor):
            self.sessions[bucket] = self.sessions.get(bucket, 0) + 1

    def prune(self, anchor: int) -> None:
        floor = self.floor(anchor)
        if self.pruned_to is not None and floor <= self.pruned_to:
            return
        self.pruned_to = floor
        for table in (self.buckets, self.sessions):
            for bucket in [b for b in table if b <= floor]:
                del table[bucket]

    def read(self, anchor: int, needs: Iterable[tuple[str, str | None]]) -> Aggregates:
        floor = self.floor(anchor)
        live = [acc for bucket, acc in self.buckets.items() if bucket > floor]
        counts: dict[str, int] = {}
        sums: dict[str, float] = {}
        maxima: dict[str, float] = {}
        last: dict[str, str | float] = {}
        sessions = 0
        for agg, name in needs:
            if agg == "count":
                for acc in live:
                    for event_type, n in acc.counts.items():
                        counts[event_type] = counts.get(event_type, 0) + n
            elif agg == "sessions":
                sessions = sum(n for bucket, n in self.sessions.items() if bucket > floor)
            elif agg == "sum":
                assert name is not None  # every aggregate but count and sessions is of a field
                sums[name] = sum(acc.sums.get(name, 0) for acc in live)
            elif agg == "max":
                assert name is not None
                values = [acc.maxima[name] for acc in live if name in acc.maxima]
                if values:
                    maxima[name] = max(values)
            elif agg == "last":
                assert name is not None
                stamped = [acc.last[name] for acc in live if name in acc.last]
                if stamped:
                    last[name] = max(stamped, key=lambda tv: tv[0])[1]
        return Aggregates(counts=counts, sessions=sessions, sums=sums, maxima=maxima, last=last)


@evolvable
@dataclass(slots=True)
class SessionAcc:
    start: int
    end: int
    acc: Acc = field(default_factory=Acc)
    distinct: dict[str, set[Any]] = field(default_factory=dict)

    def add(self, event: SessionEvent) -> None:
        self.acc.add(event)
        for name in FIELDS:
            value = getattr(event, name)
            if value is not None:
                self.distinct.setdefault(name, set()).add(value)


@evolvable
@dataclass(slots=True)
class FeatureState:
    """One user's aggregates as of ``clock``, the latest event time given."""

    clock: int | None = None
    lifetime: Acc = field(default_factory=Acc)
    lifetime_sessions: int = 0
    session: SessionAcc | None = None
    windows: list[Window] = field(default_factory=list)
    sizes: tuple[int, ...] = ()  # the windows' sizes, in order

    def __post_init__(self) -> None:
        self.sizes = tuple(w.size_ms for w in self.windows)


def new_state(window_sizes: Iterable[int], buckets: int) -> FeatureState:
    return FeatureState(windows=[Window(size, size // buckets) for size in window_sizes])


def resize(state: FeatureState, window_sizes: Iterable[int], buckets: int) -> None:
    """Keep the windows of ``window_sizes`` (state restored after ``time.windows`` changed): a
    kept window keeps its history, a new one starts empty, a dropped one is forgotten."""
    kept = {(w.size_ms, w.width_ms): w for w in state.windows}
    state.windows = [kept.get((size, size // buckets)) or Window(size, size // buckets) for size in window_sizes]
    state.sizes = tuple(w.size_ms for w in state.windows)


def add(state: FeatureState, event: SessionEvent, rules: SessionRules) -> None:
    """Fold one event in; in event-time order this is exactly the sorted stream's state."""
    in_order = state.clock is None or event.ts >= state.clock
    anchor = event.ts if in_order or state.clock is None else state.clock  # (not in order: there is a clock)
    state.lifetime.add(event)
    for window in state.windows:
        window.add(event, anchor)
    session = state.session
    if in_order:
        if (session is None or event.ts - session.end >= rules.gap_ms
                or event.ts - session.start >= rules.max_length_ms):
            old_end = None
            session = state.session = SessionAcc(event.ts, event.ts)
            state.lifetime_sessions += 1
        else:
            old_end = session.end
            session.end = event.ts
        session.add(event)
        for window in state.windows:
            window.move_session(old_end, event.ts, anchor)
            window.prune(anchor)
        state.clock = event.ts
    elif session is not None and event.ts > session.start - rules.gap_ms:
        session.start = min(session.start, event.ts)
        session.add(event)


def inputs(state: FeatureState, needs: Requirements) -> FeatureInputs:
    """The aggregates ``needs`` lists, as of ``state.clock`` (only those: this runs per step)."""
    anchor = state.clock if state.clock is not None else 0
    session = state.session
    if session is None or not needs.session:
        session_aggs = Aggregates()
    else:
        acc = session.acc
        wanted = {agg for agg, _ in needs.session}
        session_aggs = Aggregates(
            counts=acc.counts, sessions=1, sums=acc.sums, maxima=acc.maxima,
            last={name: value for name, (_, value) in acc.last.items()} if "last" in wanted else {},
            distinct={name: len(values) for name, values in session.distinct.items()} if "distinct" in wanted else {})
    life = state.lifetime
    lifetime = Aggregates(
        counts=life.counts, sessions=state.lifetime_sessions, sums=life.sums, maxima=life.maxima,
        last={name: value for name, (_, value) in life.last.items()}
        if any(agg == "last" for agg, _ in needs.lifetime) else {})
    windows = {}
    if needs.windows:
        by_size = {window.size_ms: window for window in state.windows}
        windows = {size: by_size[size].read(anchor, wanted) for size, wanted in needs.windows.items()}
    return FeatureInputs(session=session_aggs, lifetime=lifetime, windows=windows)


def check_provided(rules: RuleSet, window_sizes: Iterable[int]) -> None:
    """Refuse rules that read something the job does not keep, naming the feature."""
    sizes = sorted(set(window_sizes))
    for feature in rules.features:
        where = f"{rules.source}: feature '{feature.name}'"
        if feature.over in (SESSION, LIFETIME):
            span, offered = feature.over, PROVIDED[feature.over]
        else:
            span, offered = f"a {window_name(feature.over)} window", PROVIDED["window"]
            if feature.over not in sizes:
                kept = ", ".join(window_name(size) for size in sizes)
                raise RulesError(f"{where}: reads a {window_name(feature.over)} window, but the job keeps "
                                 f"only {kept} (add it to time.windows.sizes)")
        if feature.agg not in offered:
            raise RulesError(f"{where}: agg '{feature.agg}' over {span} is not offered "
                             f"(offered: {', '.join(sorted(offered))})")
