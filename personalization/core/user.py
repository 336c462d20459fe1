"""Everything the job knows about one user, and how an event or the passage of event time changes it.

``UserLogic`` is the single place where the per-user semantics live. The Flink operator hands
it the state, the event and the current watermark, and carries out what it returns; the
benchmark and the tests call it directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from personalization.core import sessions
from personalization.core.events import Event
from personalization.core.sessions import SessionRules, SessionState, SessionSummary
from personalization.core.windows import RollingCounts, window_name

END_OF_INPUT = 2**63 - 1  # Flink's final watermark of a bounded stream


class Outcome(str, enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(slots=True)
class UserState:
    user_id: str
    version: int = 0
    first_seen: int | None = None
    last_seen: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    dwell_ms: int = 0
    max_scroll_depth: float = 0.0
    categories: dict[str, int] = field(default_factory=dict)
    windows: list[RollingCounts] = field(default_factory=list)
    seen_event_ids: dict[str, int] = field(default_factory=dict)
    session_state: SessionState = field(default_factory=SessionState)
    last_session: SessionSummary | None = None


@dataclass(slots=True)
class Result:
    """What the operator must do after one call: write the profile, emit sessions, arm a timer."""

    outcome: Outcome | None = None
    lateness_ms: int = 0
    profile_changed: bool = False
    sessions: list[SessionSummary] = field(default_factory=list)
    next_timer: int | None = None


@dataclass(frozen=True, slots=True)
class UserLogic:
    session_rules: SessionRules
    window_sizes: tuple[int, ...]
    window_buckets: int
    dedup_horizon_ms: int
    top_categories: int

    def new_state(self, user_id: str) -> UserState:
        return UserState(
            user_id=user_id,
            windows=[RollingCounts.create(size, self.window_buckets) for size in self.window_sizes],
        )

    def on_event(self, state: UserState, event: Event, watermark: int) -> Result:
        if event.event_id in state.seen_event_ids:
            return Result(Outcome.DUPLICATE)
        lateness = watermark - event.ts
        if lateness > self.session_rules.allowed_lateness_ms:
            return Result(Outcome.LATE, lateness_ms=lateness)
        self._remember(state, event, watermark)
        self._count(state, event)
        sessions.add_event(state.session_state, event)
        result = Result(Outcome.PROCESSED, lateness_ms=max(lateness, 0), profile_changed=True)
        self._advance(state, watermark, result)
        return result

    def on_timer(self, state: UserState, watermark: int) -> Result:
        result = Result()
        self._advance(state, watermark, result)
        return result

    def profile(self, state: UserState) -> dict:
        """The serving view of the state: what downstream apps read from Redis."""
        anchor = state.last_seen or 0
        current = sessions.open_session(state.user_id, state.session_state, self.session_rules)
        top = sorted(state.categories.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top_categories]
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
            "sessions_closed": state.session_state.closed_count,
            "sessions_converted": state.session_state.converted_count,
            "current_session": _session_brief(current),
            "last_session": _session_brief(state.last_session),
            "windows_as_of": anchor,
            "windows": {window_name(w.size_ms): w.counts(anchor) for w in state.windows},
        }

    def _remember(self, state: UserState, event: Event, watermark: int) -> None:
        """Ids are forgotten once the watermark is a dedup horizon past their event time."""
        state.seen_event_ids[event.event_id] = event.ts
        horizon = watermark - self.dedup_horizon_ms
        if len(state.seen_event_ids) > 64 and min(state.seen_event_ids.values()) < horizon:
            state.seen_event_ids = {e: ts for e, ts in state.seen_event_ids.items() if ts >= horizon}

    def _count(self, state: UserState, event: Event) -> None:
        state.version += 1
        state.first_seen = event.ts if state.first_seen is None else min(state.first_seen, event.ts)
        state.last_seen = event.ts if state.last_seen is None else max(state.last_seen, event.ts)
        state.counts[event.event_type] = state.counts.get(event.event_type, 0) + 1
        if event.dwell_ms:
            state.dwell_ms += event.dwell_ms
        if event.scroll_depth is not None and event.scroll_depth > state.max_scroll_depth:
            state.max_scroll_depth = event.scroll_depth
        if event.category_id is not None:
            state.categories[event.category_id] = state.categories.get(event.category_id, 0) + 1
        for window in state.windows:
            window.add(event.ts, event.event_type, state.last_seen)

    def _advance(self, state: UserState, watermark: int, result: Result) -> None:
        end_of_input = watermark >= END_OF_INPUT
        emitted = sessions.advance(state.user_id, state.session_state, self.session_rules,
                                   watermark, end_of_input)
        if emitted:
            # One version step per applied event and per session emission, never per call:
            # the same input then gives the same versions however timers happen to batch.
            state.version += len(emitted)
            state.last_session = _newest_closed(emitted, state) or state.last_session
            result.profile_changed = True
            result.sessions.extend(emitted)
        if not end_of_input:
            result.next_timer = sessions.next_deadline(state.session_state, self.session_rules, watermark)


def _newest_closed(emitted: list[SessionSummary], state: UserState) -> SessionSummary | None:
    """Sessions are forgotten oldest first, so the newest one just emitted or still held is the
    newest closed session overall; when neither exists the previous answer still stands."""
    candidates = [s for s in emitted if s.status != "retracted"] + list(state.session_state.emitted.values())
    return max(candidates, key=lambda s: s.start, default=None)


def _session_brief(summary: SessionSummary | None) -> dict | None:
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
