"""The user side of online learning: what the user operator tells the trainer, per user, in event-time order.

The shared models live in one trainer (``core.learning.trainer``); the user logic feeds it
typed records (``LearningRecord``), built here from the user's keyed state:

- ``EventRecord``, one per event the rules are given (so in event-time order per user, as the
  watermark passes the events): the propensity features of the event's session as of that
  event, whether it is a purchase, its category (trending), how many events the user has had,
  and the user's personal top-k interests (decayed category affinity, kept here in the user's
  state) when the user has enough history for them.
- ``SessionRecord``, one per session emission (closed / updated / retracted): the span and
  whether it converted (the propensity label), and for a closed session the user's behaviour
  over all closed sessions (the clustering input).
- ``EraseRecord``: the user was erased; the trainer forgets what it holds of them.

Every record has a sort key ``(time, kind, user, tiebreak)``: the trainer processes them in
that order once its watermark has passed ``time``, so what it learns, and in which order, does
not depend on arrival order, parallelism or how watermarks happen to batch. ``time`` is the
event time for an event, and the session's close time for a session (a close sorts before an
event at the same time: an event at ``end + gap`` starts the next session).

On the wire and in the trainer's state (held records, operation log) a record is JSON with its
field names, its kind and its format version (``encode``/``decode``, msgspec): floats round-trip
exactly, so the trainer sees the very features the user side computed. ``decode`` also reads the
first format, one-letter keys and no version (``{"k": "e", "t": ...}``), which savepoints of
earlier releases hold, and refuses a version it does not know (a savepoint of a later release).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from personalization.core.aggregates import FeatureState
from personalization.core.evolvable import evolvable
from personalization.core.learning.clusters import profile_features
from personalization.core.learning.interests import InterestRules, Interests, add_interest, top_interests
from personalization.core.learning.propensity import features
from personalization.core.sessions import SessionEvent, SessionRules, SessionSummary, session_id

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
FORMAT = 2
"""The learning records' format version; 1 is the first format (one-letter keys, no version field)."""


class SessionRef(msgspec.Struct, array_like=True, frozen=True):
    """A session as a record names it (the trainer's ``Span`` adds what the label bookkeeping reads)."""

    session_id: str
    start: int
    end: int


class _Record(msgspec.Struct, tag_field="kind", frozen=True, kw_only=True):
    """What every learning record carries besides its kind: the format it was written in."""

    format: int = FORMAT


class EventRecord(_Record, tag="event", frozen=True):
    """An event given to the rules: the propensity model scores its session as of it."""

    time: int
    user: str
    event_id: str
    session: SessionRef
    features: list[float]             # propensity.FEATURE_NAMES, in that order
    purchase: bool
    category: str | None
    events_seen: int
    interests: list[tuple[str, float]]  # the user's personal top-k, empty with too little history
    interests_as_of: int | None

    def sort_key(self) -> tuple[int, int, str, str, int]:
        return self.time, 1, self.user, self.event_id, 0


class SessionRecord(_Record, tag="session", frozen=True):
    """A session emission: the propensity label, and for a closed session the clustering input."""

    time: int                         # when it closes in event time (``LearningFeed.closes_at``)
    user: str
    session: SessionRef
    status: str                       # closed | updated | retracted
    converted: bool
    revision: int
    behaviour: dict[str, float] | None = None   # closed sessions only: clusters.profile_features

    def sort_key(self) -> tuple[int, int, str, str, int]:
        return self.time, 0, self.user, self.session.session_id, self.revision  # closes before events


class EraseRecord(_Record, tag="erase", frozen=True):
    """The user was erased (never held or sorted: a user task sends it after the user's last record)."""

    user: str


LearningRecord = EventRecord | SessionRecord | EraseRecord
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LearningRecord)


def encode(record: LearningRecord) -> str:
    return _encoder.encode(record).decode()


def decode(text: str) -> LearningRecord:
    """A record of the first format or of ``FORMAT``; ``ValueError`` names any other version."""
    if text.startswith('{"k":'):
        return _first_format(orjson.loads(text))
    record = _decoder.decode(text)
    if record.format != FORMAT:
        raise ValueError(f"a learning record of format {record.format}: this release reads formats 1 and "
                         f"{FORMAT} (a savepoint of a later release?)")
    return record


def _first_format(r: dict[str, Any]) -> LearningRecord:
    if r["k"] == "x":
        return EraseRecord(r["u"])
    span = SessionRef(*r["s"])
    if r["k"] == "e":
        return EventRecord(r["t"], r["u"], r["id"], span, r["x"], r["p"], r["c"], r["n"],
                           [(c, s) for c, s in r["i"]], r["ia"])
    return SessionRecord(r["t"], r["u"], span, r["st"], r["cv"], r["r"], r.get("f"))


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

    def on_release(self, user_id: str, learning: LearningState, state: FeatureState,
                   event: SessionEvent) -> EventRecord:
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
        return EventRecord(event.ts, user_id, event.event_id,
                           SessionRef(session_id(user_id, session.start), session.start, session.end),
                           list(x.values()), event.event_type == "purchase", event.category_id, events_seen,
                           personal, learning.interests.as_of)

    def on_session(self, learning: LearningState, summary: SessionSummary) -> SessionRecord:
        """The session record of one emission; a closed session also updates the closed totals."""
        behaviour = None
        if summary.status == "closed":
            for event_type, n in summary.counts.items():
                learning.closed_counts[event_type] = learning.closed_counts.get(event_type, 0) + n
            learning.closed_sessions += 1
            learning.closed_converted += summary.converted
            learning.closed_dwell_ms += summary.dwell_ms
            learning.closed_max_scroll = max(learning.closed_max_scroll, summary.max_scroll_depth)
            behaviour = profile_features(
                counts=learning.closed_counts, sessions_closed=learning.closed_sessions,
                sessions_converted=learning.closed_converted, dwell_ms=learning.closed_dwell_ms,
                max_scroll_depth=learning.closed_max_scroll)
        return SessionRecord(self.closes_at(summary), summary.user_id,
                             SessionRef(summary.session_id, summary.start, summary.end), summary.status,
                             summary.converted, summary.revision, behaviour)

    def closes_at(self, summary: SessionSummary) -> int:
        """When the session closes in event time: the gap after its last event, or its maximum length."""
        rules = self.session_rules
        return min(summary.end + rules.gap_ms, summary.start + rules.max_length_ms)


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

