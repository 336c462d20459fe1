"""The user side of online learning: what the user operator tells the trainer, per user, in event-time order.

The shared models live in one trainer (``core.learning.trainer``); the user logic feeds it two
kinds of record, built here from the user's keyed state:

- **event** (``"e"``), one per event the rules are given (so in event-time order per user,
  as the watermark passes the events): the propensity features of the event's session as of
  that event, whether it is a purchase, its category (trending), how many events the user has
  had, and the user's personal top-k interests (decayed category affinity, kept here in the
  user's state) when the user has enough history for them.
- **session** (``"s"``), one per session emission (closed / updated / retracted): the span
  and whether it converted (the propensity label), and for a closed session the user's
  behaviour over all closed sessions (the clustering input).

Every record carries a sort key ``(time, kind, user, tiebreak)``: the trainer processes them in
that order once its watermark has passed ``time``, so what it learns, and in which order, does
not depend on arrival order, parallelism or how watermarks happen to batch. ``time`` is the
event time for an event, and the session's close time for a session (a close sorts before an
event at the same time: an event at ``end + gap`` starts the next session).

Records are JSON (orjson): floats round-trip exactly, so the trainer sees the very features the
user side computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from personalization.core.aggregates import FeatureState
from personalization.core.evolvable import evolvable
from personalization.core.learning.clusters import profile_features
from personalization.core.learning.interests import InterestRules, Interests, add_interest, top_interests
from personalization.core.learning.propensity import features
from personalization.core.sessions import SessionEvent, SessionRules, SessionSummary, session_id

EVENT, SESSION = "e", "s"
ERASE = "x"  # the user was erased: the trainer forgets what it holds of them (never held or sorted)
KIND_ORDER = {SESSION: 0, EVENT: 1}
HOUR_MS, DAY_MS = 3_600_000, 86_400_000


@evolvable
@dataclass(slots=True)
class LearningState:
    """Per user (part of the user's keyed state): interests, and totals over closed sessions."""

    interests: Interests = field(default_factory=Interests)
    closed_counts: dict[str, int] = field(default_factory=dict)
    closed_sessions: int = 0
    closed_converted: int = 0
    closed_dwell_ms: int = 0
    closed_max_scroll: int | float = 0.0


@dataclass(frozen=True, slots=True)
class LearningFeed:
    session_rules: SessionRules
    interest_rules: InterestRules = InterestRules()

    def on_release(self, user_id: str, learning: LearningState, state: FeatureState, event: SessionEvent) -> str:
        """The event record of ``event``, just given to the rules (``state`` already holds it)."""
        if event.category_id is not None:
            learning.interests = add_interest(learning.interests, event.category_id, event.event_type,
                                              event.ts, self.interest_rules)
        session = state.session
        assert session is not None  # the event just added is in it
        acc = session.acc
        counts = acc.counts
        lifetime = state.lifetime.counts
        events_seen = sum(lifetime.values())
        x = features(
            event_type=event.event_type,
            session_counts=counts,
            session_duration_ms=session.end - session.start,
            session_max_scroll_depth=float(acc.maxima.get("scroll_depth", 0.0)),
            session_dwell_ms=int(acc.sums.get("dwell_ms", 0)),
            session_items=len(session.distinct.get("item_id", ())),
            session_categories=len(session.distinct.get("category_id", ())),
            lifetime_purchases=lifetime.get("purchase", 0),
            sessions_closed=max(state.lifetime_sessions - 1, 0),
            events_1h=_window_events(state, HOUR_MS),
            events_24h=_window_events(state, DAY_MS),
        )
        rules = self.interest_rules
        personal = top_interests(learning.interests, rules.top_k) if events_seen >= rules.min_events else []
        return orjson.dumps({
            "k": EVENT, "t": event.ts, "u": user_id, "id": event.event_id,
            "s": [session_id(user_id, session.start), session.start, session.end],
            "x": list(x.values()), "p": event.event_type == "purchase", "c": event.category_id,
            "n": events_seen, "i": personal, "ia": learning.interests.as_of,
        }).decode()

    def on_session(self, learning: LearningState, summary: SessionSummary) -> str:
        """The session record of one emission; a closed session also updates the closed totals."""
        record = {
            "k": SESSION, "t": self.closes_at(summary), "u": summary.user_id, "id": summary.session_id,
            "s": [summary.session_id, summary.start, summary.end], "st": summary.status,
            "cv": summary.converted, "r": summary.revision,
        }
        if summary.status == "closed":
            for event_type, n in summary.counts.items():
                learning.closed_counts[event_type] = learning.closed_counts.get(event_type, 0) + n
            learning.closed_sessions += 1
            learning.closed_converted += summary.converted
            learning.closed_dwell_ms += summary.dwell_ms
            learning.closed_max_scroll = max(learning.closed_max_scroll, summary.max_scroll_depth)
            record["f"] = profile_features(
                counts=learning.closed_counts, sessions_closed=learning.closed_sessions,
                sessions_converted=learning.closed_converted, dwell_ms=learning.closed_dwell_ms,
                max_scroll_depth=learning.closed_max_scroll)
        return orjson.dumps(record).decode()

    def closes_at(self, summary: SessionSummary) -> int:
        """When the session closes in event time: the gap after its last event, or its maximum length."""
        rules = self.session_rules
        return min(summary.end + rules.gap_ms, summary.start + rules.max_length_ms)


def erase_record(user_id: str) -> str:
    """Sent after the user's last record: a user task sends a user's records in order."""
    return orjson.dumps({"k": ERASE, "u": user_id}).decode()


def sort_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """The trainer's processing order: time, then closes before events, then user, then id."""
    return record["t"], KIND_ORDER[record["k"]], record["u"], record["id"], record.get("r", 0)


def _window_events(state: FeatureState, size_ms: int) -> int:
    assert state.clock is not None  # set by the event just added
    for window in state.windows:
        if window.size_ms == size_ms:
            return sum(window.read(state.clock, (("count", None),)).counts.values())
    raise ValueError(f"learning needs a {size_ms} ms rolling window in time.windows.sizes")


def check_windows(window_sizes: Iterable[int]) -> None:
    """Start-up check: the propensity features read the 1h and 24h windows."""
    missing = [name for name, size in (("1h", HOUR_MS), ("24h", DAY_MS)) if size not in set(window_sizes)]
    if missing:
        raise ValueError(f"learning.enabled needs the {' and '.join(missing)} window(s) in time.windows.sizes")

