"""Everything the job knows about one user, and how an event or the passage of event time changes it.

``UserLogic`` is the single place where the per-user semantics live. The Flink operator hands
it the state, the event and the current watermark, and carries out what it returns; the
benchmark and the tests call it directly.

Segments (``rules``): counters, windows and sessions take each event as it arrives, but the
rules see the user's events in **event-time order**: an event is given to the rules when the
watermark passes it (ordered by time, then event id), interleaved with the rules' deadlines
(a deadline at t is decided before an event at t or later). So segment changes are those of
the sorted stream, whatever the arrival order, at the price of the watermark's delay
(``time.out_of_orderness`` + one ``time.watermark_interval``). An event that arrives behind the
watermark (within the allowed lateness) is given at once, after what the rules have seen.

At the end of a bounded input (watermark ``END_OF_INPUT``) every held event is given to the
rules, but the end of a replay is not the passage of time: rule deadlines fire only up to
``final_watermark`` (the operator passes the latest event time the job read, minus the
out-of-orderness: the watermark a live job reaches once it has read everything), so a
bounded run and an unbounded run drained at the same point end in the same state.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from personalization.core import aggregates, experiments, sessions
from personalization.core.aggregates import FeatureState
from personalization.core.events import IMPRESSION, Event
from personalization.core.experiments import EXPOSURE, Experiment, ExperimentOutcome
from personalization.core.evolvable import evolvable
from personalization.core.learning.feed import EventRecord, LearningFeed, LearningState, SessionRecord
from personalization.core.rules import Cause, FeatureInputs, RuleSet, SegmentChange, SegmentState
from personalization.core.sessions import SessionEvent, SessionRules, SessionState, SessionSummary
from personalization.core.windows import RollingCounts, window_name

END_OF_INPUT = 2**63 - 1  # Flink's final watermark of a bounded stream


class Device(Protocol):
    """What a user-agent resolver returns (``udfs.enrichment.Device``; the core imports no parser)."""

    device_class: str
    browser: str
    os: str


class Outcome(str, enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    LATE = "late"
    NO_CONSENT = "no_consent"  # not profiled: consent not granted (core.privacy; set by the operator)


@evolvable
@dataclass(slots=True)
class UserState:
    user_id: str
    version: int = 0
    first_seen: int | None = None
    last_seen: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    dwell_ms: int = 0
    max_scroll_depth: int | float = 0.0
    categories: dict[str, int] = field(default_factory=dict)
    windows: list[RollingCounts] = field(default_factory=list)
    seen_event_ids: dict[str, int] = field(default_factory=dict)  # event id -> ts, oldest arrival first
    seen_floor: int | None = None  # the smallest ts in seen_event_ids (None: not known yet)
    session_state: SessionState = field(default_factory=SessionState)
    last_session: SessionSummary | None = None
    # Segments: the rules' aggregates and decisions, and how far in event time they have seen.
    features: FeatureState = field(default_factory=FeatureState)
    segments: SegmentState | None = None
    released_to: int | None = None  # events at or before this time have been given to the rules
    rules_version: str | None = None  # the rules that made the current decisions
    changes_made: int = 0  # segment changes so far: numbers them
    # Change records (``NumberedChange.as_record``) not yet known to be in Redis: the operator
    # holds them back with the profile write and re-sends them after a restore (written by seq,
    # so a re-send is a no-op). Trimmed at the user's next step once their batch went out.
    unwritten_changes: list[dict[str, Any]] = field(default_factory=list)
    learning: LearningState | None = None  # interests and closed-session totals (learning.enabled)
    # Enrichment: events per device class, browser and OS family (events with a user agent only),
    # and the device of the latest such event as (ts, event_id, class, browser, os).
    devices: dict[str, int] = field(default_factory=dict)
    browsers: dict[str, int] = field(default_factory=dict)
    oses: dict[str, int] = field(default_factory=dict)
    last_device: tuple[int, str, str, str, str] | None = None
    consent: str | None = None  # the user's latest stated consent, granted or denied (core.privacy)
    anonymous_ids: list[str] = field(default_factory=list)  # stitched into this profile, oldest first (core.identity)
    experiments: dict[str, ExperimentOutcome] = field(default_factory=dict)  # exposed to, by name (core.experiments)


class NumberedChange(NamedTuple):
    """A segment change and its number among the user's changes (1, 2, ...): the same on every
    run over the same events, so consumers and the Redis stream deduplicate on (user, seq)."""

    seq: int
    change: SegmentChange

    def as_record(self) -> dict[str, Any]:
        return {**self.change.as_record(), "seq": self.seq}


@dataclass(frozen=True, slots=True)
class StateCaps:
    """Bounds on what one user's state holds, whatever the user sends (a crawler, a bot): what a
    cap drops is reported in ``Result.dropped`` (the operator counts it in a metric)."""

    seen_ids: int = 10_000    # event ids remembered for deduplication; beyond, the oldest arrivals
    categories: int = 1_000   # categories counted; beyond, the least counted quarter is forgotten
    session_events: int = 2_000  # events held for sessions and rules; beyond, only counted (sessions.add_event)


@dataclass(slots=True)
class Result:
    """What the operator must do after one call: write the profile, emit sessions and segment
    changes, arm a timer."""

    outcome: Outcome | None = None
    lateness_ms: int = 0
    profile_changed: bool = False
    state_changed: bool = False  # the state changed without the profile (it must still be kept)
    sessions: list[SessionSummary] = field(default_factory=list)
    changes: list[NumberedChange] = field(default_factory=list)
    next_timer: int | None = None
    learning: list[EventRecord | SessionRecord] = field(default_factory=list)  # for the trainer (core.learning.feed)
    dropped: dict[str, int] = field(default_factory=dict)  # what a StateCaps bound dropped: kind -> count
    # The categories whose counts the step raised in place (a cap's trim replaces the dict instead):
    # a busy user's store writes only these (state.user_store).
    categories_counted: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UserLogic:
    session_rules: SessionRules
    window_sizes: tuple[int, ...]
    window_buckets: int
    dedup_horizon_ms: int
    top_categories: int
    rules: RuleSet | None = None  # None: no segments
    learning: LearningFeed | None = None  # None: no online learning records
    # user agent -> Device (a cached parser, see udfs.enrichment); None: no device enrichment
    device_of: Callable[[str], Device] | None = None
    caps: StateCaps = StateCaps()
    experiments: Mapping[str, Experiment] = field(default_factory=dict)  # by name (core.experiments)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window_sizes", tuple(self.window_sizes))

    def with_rules(self, rules: RuleSet) -> UserLogic:
        """The same logic under ``rules``; raises ``RulesError`` naming the feature if the rules
        read something the job does not keep (e.g. a window not in ``time.windows.sizes``)."""
        aggregates.check_provided(rules, self.window_sizes)
        return replace(self, rules=rules)

    def new_state(self, user_id: str) -> UserState:
        return UserState(
            user_id=user_id,
            windows=[RollingCounts.create(size, self.window_buckets) for size in self.window_sizes],
            features=aggregates.new_state(self.window_sizes, self.window_buckets),
            segments=SegmentState(user_id),
        )

    def on_event(self, state: UserState, event: Event, watermark: int) -> Result:
        if event.event_id in state.seen_event_ids:
            return Result(Outcome.DUPLICATE)
        lateness = watermark - event.ts
        if lateness > self.session_rules.allowed_lateness_ms:
            return Result(Outcome.LATE, lateness_ms=lateness)
        result = Result(Outcome.PROCESSED, lateness_ms=max(lateness, 0), profile_changed=True)
        if self._apply(state, event, watermark, result):
            self._advance(state, watermark, result)
        else:  # no session or rule can change: an impression (nothing to write), or an event beyond
            # the held-events cap, counted in O(1): its profile is written like any other (the
            # operator's write-behind coalesces a busy user's writes), or it would wait for a step
            # that may never come (the held sessions' last emission may be behind it)
            result.profile_changed, result.state_changed = event.event_type != IMPRESSION, True
        return result

    def merge(self, state: UserState, anonymous_id: str, events: tuple[Event, ...], watermark: int,
              max_anonymous_ids: int) -> tuple[Result, list[str]]:
        """Stitch an anonymous id's events into this profile (``core.identity``): each is applied as
        if it had carried this user's id, without a lateness check (it was on time when it arrived
        under the anonymous id), duplicates skipped. Returns the result and the anonymous ids no
        longer listed (beyond ``max_anonymous_ids``)."""
        dropped = add_anonymous_id(state.anonymous_ids, anonymous_id, max_anonymous_ids)
        state.version += 1
        result = Result(Outcome.PROCESSED, profile_changed=True)
        for event in events:
            if event.event_id not in state.seen_event_ids:
                self._apply(state, event, watermark, result)
        self._advance(state, watermark, result)
        return result, dropped

    def hand_over(self, state: UserState, user_id: str) -> Result:
        """The anonymous profile's last step before it becomes an alias of ``user_id``: it leaves
        every segment (cause ``identity.merged``), so audiences and change consumers drop it."""
        return self._leave_all(state, Cause("identity.merged", {"user_id": user_id}))

    def reset(self, state: UserState, cause: str) -> tuple[UserState, Result]:
        """A user's reset of their personalization: the user leaves every segment (cause
        ``cause``), and a fresh state replaces the old one. Kept: consent, stitched anonymous ids,
        the event ids seen (a redelivered old event must not count again) and the numbering of
        versions and changes (both go on increasing: readers compare them)."""
        result = self._leave_all(state, Cause(cause, {}))
        fresh = self.new_state(state.user_id)
        fresh.version = state.version + 1
        fresh.changes_made = state.changes_made
        fresh.unwritten_changes = state.unwritten_changes
        fresh.seen_event_ids, fresh.seen_floor = state.seen_event_ids, state.seen_floor
        fresh.consent, fresh.anonymous_ids = state.consent, state.anonymous_ids
        fresh.experiments = state.experiments  # an experiment's record, not personalization
        result.profile_changed = True
        return fresh, result

    def on_timer(self, state: UserState, watermark: int, final_watermark: int | None = None) -> Result:
        """``final_watermark``: at the end of input, how far rule deadlines may fire (see above)."""
        result = Result()
        self._advance(state, watermark, result, final_watermark)
        return result

    def _leave_all(self, state: UserState, cause: Cause) -> Result:
        result = Result()
        if self.rules is not None and state.segments is not None and state.segments.members:
            at = state.features.clock if state.features.clock is not None else (state.last_seen or 0)
            self._step(state, self.rules.leave_all(state.segments, cause, at), result)
        return result

    def profile(self, state: UserState) -> dict[str, Any]:
        """The serving view of the state: what downstream apps read from Redis."""
        anchor = state.last_seen or 0
        current = sessions.open_session(state.user_id, state.session_state, self.session_rules)
        top = heapq.nsmallest(self.top_categories, state.categories.items(), key=_most_counted)
        return {
            "user_id": state.user_id,
            "version": state.version,
            "first_seen": state.first_seen,
            "last_seen": state.last_seen,
            "events_total": sum(state.counts.values()),
            "counts": dict(sorted(state.counts.items())),
            "dwell_ms_total": state.dwell_ms,
            "max_scroll_depth": state.max_scroll_depth,
            "top_categories": [{"category_id": c, "events": n} for c, n in top],
            "devices": dict(sorted(state.devices.items())),
            "browsers": dict(sorted(state.browsers.items())),
            "operating_systems": dict(sorted(state.oses.items())),
            "last_device": _device_brief(state.last_device),
            "anonymous_ids": list(state.anonymous_ids),
            "sessions_closed": state.session_state.closed_count,
            "sessions_converted": state.session_state.converted_count,
            "current_session": _session_brief(current),
            "last_session": _session_brief(state.last_session),
            "experiments": experiments.profile_view(self.experiments, state.experiments, state.user_id,
                                                    state.last_seen, _members(state)),
            "windows_as_of": anchor,
            "windows": {window_name(w.size_ms): w.counts(anchor) for w in state.windows},
            **self._segments_view(state),
        }

    def _segments_view(self, state: UserState) -> dict[str, Any]:
        """Current memberships (segment -> event time entered), primary segment, scores."""
        seg, rules, clock = state.segments, self.rules, state.features.clock
        if rules is None or seg is None:
            return {"segments": {}, "primary_segment": None, "scores": {}, "rules_version": None}
        return {
            "segments": dict(sorted(seg.members.items())),
            "primary_segment": rules.primary(seg),
            "scores": rules.read_scores(seg, clock) if clock is not None else {},
            "rules_version": state.rules_version,
        }

    def _apply(self, state: UserState, event: Event, watermark: int, result: Result) -> bool:
        """False when no session or rule can change: an impression (remembered for dedup only), or
        an event counted but not held for sessions and rules (beyond ``caps.session_events``)."""
        self._remember(state, event, watermark, result)
        if event.event_type == EXPOSURE:  # the experiment's alone: not behaviour (counts, sessions, rules)
            state.version += 1
            experiments.expose(self.experiments, state.experiments, state.user_id, _members(state),
                               event.experiment, event.variant, event.ts)
            return True
        if event.event_type == IMPRESSION:  # the recommender's exposure feedback: not behaviour either
            return False
        self._count(state, event, result)
        if not sessions.add_event(state.session_state, event, self.caps.session_events):
            _add(result.dropped, "session_events", 1)
            return False
        if self.rules is not None and state.released_to is not None and event.ts <= state.released_to:
            self._adopt_rules(state, result)
            self._give(state, _compact(event), result)  # behind what the rules have seen: at once
        return True

    def _remember(self, state: UserState, event: Event, watermark: int, result: Result) -> None:
        """Ids are forgotten once the watermark is a dedup horizon past their event time, and the
        oldest arrivals beyond ``caps.seen_ids``. Forgetting rebuilds the dict (O(ids)), so it
        waits for slack: until the oldest id is an eighth of the horizon overdue, or the ids a
        quarter of the cap too many; then it is done at most once per eighth of the horizon of
        event time, or per quarter of the cap of new ids, not per event."""
        seen = state.seen_event_ids
        seen[event.event_id] = event.ts
        if state.seen_floor is None:  # a new user, or state from before the floor was kept
            state.seen_floor = min(seen.values())
        elif event.ts < state.seen_floor:
            state.seen_floor = event.ts
        horizon = watermark - self.dedup_horizon_ms
        if state.seen_floor < horizon - self.dedup_horizon_ms // 8:
            seen = state.seen_event_ids = {e: ts for e, ts in seen.items() if ts >= horizon}
            state.seen_floor = min(seen.values(), default=None)
        limit = self.caps.seen_ids
        if len(seen) > limit + limit // 4:
            dropped = len(seen) - limit
            seen = state.seen_event_ids = dict(itertools.islice(seen.items(), dropped, None))
            state.seen_floor = min(seen.values())
            _add(result.dropped, "seen_ids", dropped)

    def _count(self, state: UserState, event: Event, result: Result) -> None:
        state.version += 1
        state.first_seen = event.ts if state.first_seen is None else min(state.first_seen, event.ts)
        state.last_seen = event.ts if state.last_seen is None else max(state.last_seen, event.ts)
        state.counts[event.event_type] = state.counts.get(event.event_type, 0) + 1
        if event.dwell_ms:
            state.dwell_ms += event.dwell_ms
        if event.scroll_depth is not None and event.scroll_depth > state.max_scroll_depth:
            state.max_scroll_depth = event.scroll_depth
        if event.category_id is not None:
            categories = state.categories
            categories[event.category_id] = categories.get(event.category_id, 0) + 1
            result.categories_counted.append(event.category_id)
            limit = self.caps.categories
            if len(categories) > limit + limit // 4:  # keep the most counted: once per quarter of the cap
                state.categories = dict(heapq.nsmallest(limit, categories.items(), key=_most_counted))
                _add(result.dropped, "categories", len(categories) - limit)
        for window in state.windows:
            window.add(event.ts, event.event_type, state.last_seen)
        if event.user_agent and self.device_of is not None:
            self._count_device(state, event)
        if event.event_type == "purchase" and state.experiments:
            experiments.on_purchase(self.experiments, state.experiments, event.ts, event.revenue or 0.0)

    def _count_device(self, state: UserState, event: Event) -> None:
        """Counters are order-independent; the latest device is the one of the greatest
        (ts, event_id), so it too does not depend on arrival order."""
        assert self.device_of is not None and event.user_agent is not None  # as the caller checked
        device = self.device_of(event.user_agent)
        cls = str(getattr(device.device_class, "value", device.device_class))  # a plain str in state, not the enum
        _bump(state.devices, cls)
        _bump(state.browsers, device.browser)
        _bump(state.oses, device.os)
        if state.last_device is None or (event.ts, event.event_id) > state.last_device[:2]:
            state.last_device = (event.ts, event.event_id, cls, device.browser, device.os)

    def _advance(self, state: UserState, watermark: int, result: Result,
                 final_watermark: int | None = None) -> None:
        end_of_input = watermark >= END_OF_INPUT
        if self.rules is not None:  # before sessions.advance forgets the events of final sessions
            self._release(state, watermark, final_watermark if end_of_input else watermark, result)
        emitted = sessions.advance(state.user_id, state.session_state, self.session_rules,
                                   watermark, end_of_input)
        if self.learning is not None:
            result.learning.extend(self.learning.on_session(_learning(state), s) for s in emitted)
        if emitted and state.experiments:
            experiments.on_sessions(self.experiments, state.experiments, emitted)
        if emitted:
            # One version step per applied event and per session emission, never per call:
            # the same input then gives the same versions however timers happen to batch.
            state.version += len(emitted)
            state.last_session = _newest_closed(emitted, state) or state.last_session
            result.profile_changed = True
            result.sessions.extend(emitted)
        if not end_of_input:
            result.next_timer = sessions.next_deadline(state.session_state, self.session_rules, watermark)
            if self.rules is not None:
                assert state.segments is not None  # _release adopted the rules
                result.next_timer = min(
                    (t for t in (result.next_timer, self._next_release(state),
                                 self.rules.next_deadline(state.segments)) if t is not None), default=None)

    # --- segments -------------------------------------------------------------------------

    def _release(self, state: UserState, watermark: int, deadline_bound: int | None, result: Result) -> None:
        """Give the rules every held event up to ``watermark`` in time order, each after the
        deadlines it passes; then fire the deadlines up to ``deadline_bound``."""
        self._adopt_rules(state, result)
        if state.released_to is not None and watermark <= state.released_to:
            return
        held = state.session_state.events
        start = 0 if state.released_to is None else bisect.bisect_right(held, state.released_to, key=_ts)
        stop = bisect.bisect_right(held, watermark, key=_ts)
        for event in held[start:stop]:
            self._deadlines(state, event.ts, result)
            self._give(state, event, result)
        if deadline_bound is not None:
            self._deadlines(state, deadline_bound, result)
        state.released_to = watermark
        result.state_changed = True

    def _adopt_rules(self, state: UserState, result: Result) -> None:
        """After a rules update, re-decide every segment under the new rules at the rules' clock
        (removed segments are left with cause ``<segment>.removed``)."""
        assert self.rules is not None  # the segment steps run only with rules
        if state.rules_version == self.rules.version and state.features.sizes == self.window_sizes:
            return  # the common case
        if state.segments is None:  # state from before segments existed
            state.segments = SegmentState(state.user_id)
        if state.features.sizes != self.window_sizes:  # restored after time.windows changed
            aggregates.resize(state.features, self.window_sizes, self.window_buckets)
        if state.rules_version != self.rules.version:
            if state.features.clock is not None:
                changes = self.rules.evaluate(state.segments, self._inputs(state), state.features.clock)
                self._step(state, changes, result)
            state.rules_version = self.rules.version

    def _give(self, state: UserState, event: SessionEvent, result: Result) -> None:
        """One rules step: the event's scores and triggers, its aggregates, then every segment."""
        rules, seg = self.rules, state.segments
        assert rules is not None and seg is not None  # _release adopted the rules
        before = self._decisions(state)
        changes = rules.on_event(seg, event.event_type, event.ts)
        aggregates.add(state.features, event, self.session_rules)
        if self.learning is not None:
            result.learning.append(self.learning.on_release(state.user_id, _learning(state), state.features, event))
        assert state.features.clock is not None  # aggregates.add set it
        changes += rules.evaluate(seg, self._inputs(state), state.features.clock)
        if changes or self._decisions(state) != before:
            self._step(state, changes, result, always=True)

    def _deadlines(self, state: UserState, until: int, result: Result) -> None:
        """Each change a deadline makes is one version step (never one per call: how timers
        happen to batch must not show in the versions)."""
        assert self.rules is not None and state.segments is not None
        if not any(deadlines[0] <= until for deadlines in state.segments.armed.values() if deadlines):
            return  # nothing due (the common case: skip the engine's bookkeeping)
        for change in self.rules.on_deadline(state.segments, until):
            self._step(state, [change], result)

    def _step(self, state: UserState, changes: list[SegmentChange], result: Result, always: bool = False) -> None:
        if changes or always:
            state.version += 1
            result.profile_changed = True
            for change in changes:
                state.changes_made += 1
                result.changes.append(NumberedChange(state.changes_made, change))

    def _decisions(self, state: UserState) -> tuple[dict[str, int], dict[str, float]]:
        assert self.rules is not None and state.segments is not None
        clock = state.features.clock
        scores = self.rules.read_scores(state.segments, clock) if clock is not None else {}
        return dict(state.segments.members), scores

    def _inputs(self, state: UserState) -> FeatureInputs:
        assert self.rules is not None
        return aggregates.inputs(state.features, self.rules.requirements)

    def _next_release(self, state: UserState) -> int | None:
        held = state.session_state.events
        if state.released_to is None:
            return held[0].ts if held else None
        at = bisect.bisect_right(held, state.released_to, key=_ts)
        return held[at].ts if at < len(held) else None


def add_anonymous_id(ids: list[str], anonymous_id: str, limit: int) -> list[str]:
    """Append ``anonymous_id`` to a profile's stitched ids (oldest first); the ids dropped to stay
    within ``limit``, oldest first."""
    if anonymous_id not in ids:
        ids.append(anonymous_id)
    dropped = ids[: max(len(ids) - limit, 0)]
    del ids[: len(dropped)]
    return dropped


def _members(state: UserState) -> Mapping[str, int]:
    return state.segments.members if state.segments is not None else {}


def _most_counted(category: tuple[str, int]) -> tuple[int, str]:
    """Sort key: most counted first, then by name (a total order: the same top in every run)."""
    return -category[1], category[0]


def _add(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


def _learning(state: UserState) -> LearningState:
    if state.learning is None:
        state.learning = LearningState()
    return state.learning


def _ts(event: SessionEvent) -> int:
    return event.ts


def _compact(event: Event) -> SessionEvent:
    return SessionEvent(event.ts, event.event_id, event.event_type, event.item_id, event.category_id,
                        event.scroll_depth, event.dwell_ms)


def _newest_closed(emitted: list[SessionSummary], state: UserState) -> SessionSummary | None:
    """Sessions are forgotten oldest first, so the newest one just emitted or still held is the
    newest closed session overall; when neither exists the previous answer still stands."""
    candidates = [s for s in emitted if s.status != "retracted"] + list(state.session_state.emitted.values())
    return max(candidates, key=lambda s: s.start, default=None)


MAX_DEVICE_KEYS = 16  # distinct browsers (or OSes) kept per user; more are counted as "Other"


def _bump(counts: dict[str, int], key: str) -> None:
    """Bounded state: ua-parser can name families from text of the user agent itself, so a
    client cycling through made-up user agents would otherwise grow the dict without end."""
    if key not in counts and len(counts) >= MAX_DEVICE_KEYS - 1:  # one slot kept for "Other"
        key = "Other"
    counts[key] = counts.get(key, 0) + 1


def _device_brief(last: tuple[int, str, str, str, str] | None) -> dict[str, Any] | None:
    if last is None:
        return None
    return {"device_class": last[2], "browser": last[3], "os": last[4], "seen_at": last[0]}


def _session_brief(summary: SessionSummary | sessions.OpenSession | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "session_id": summary.session_id,
        "start": summary.start,
        "end": summary.end,
        "event_count": summary.event_count,
        "max_scroll_depth": summary.max_scroll_depth,
        "dwell_ms": summary.dwell_ms,
        "converted": summary.converted,
    }
