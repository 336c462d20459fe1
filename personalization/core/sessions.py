"""Event-time sessions that do not depend on arrival order.

A user's sessions are the greedy split of their events sorted by time: a new session starts
when the gap to the previous event reaches ``gap_ms`` or the session would exceed
``max_length_ms``. The tracker keeps the (compact) events of every session that a late event
could still change, and recomputes the split from them, so a shuffled stream, a late event
that bridges two sessions, or one that moves a session's start all give exactly the sessions
of the sorted stream. Events are dropped once the watermark has passed
``end + gap + allowed_lateness``: no admissible event can touch that session any more.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from personalization.core.evolvable import evolvable
from personalization.core.events import Event


class SessionEvent(NamedTuple):
    ts: int
    event_id: str
    event_type: str
    item_id: str | None
    category_id: str | None
    scroll_depth: int | float | None
    dwell_ms: int | None


@evolvable
@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What the ``sessions`` topic carries; ``status`` is closed, updated (revision > 1) or retracted."""

    session_id: str
    user_id: str
    status: str
    revision: int
    start: int
    end: int
    event_count: int
    counts: dict[str, int]
    max_scroll_depth: int | float
    dwell_ms: int
    items: tuple[str, ...]
    categories: tuple[str, ...]
    converted: bool

    @property
    def duration_ms(self) -> int:
        return self.end - self.start

    def as_record(self) -> dict:
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "status": self.status,
            "revision": self.revision,
            "start": self.start,
            "end": self.end,
            "duration_ms": self.duration_ms,
            "event_count": self.event_count,
            "counts": self.counts,
            "max_scroll_depth": self.max_scroll_depth,
            "dwell_ms": self.dwell_ms,
            "items": list(self.items),
            "categories": list(self.categories),
            "converted": self.converted,
        }


@evolvable
@dataclass(slots=True)
class SessionState:
    events: list[SessionEvent] = field(default_factory=list)
    emitted: dict[str, SessionSummary] = field(default_factory=dict)
    # Retracted ids with (last revision, end): a later split can bring an id back, and its
    # revisions must keep increasing; forgotten with the sessions around them.
    retired: dict[str, tuple[int, int]] = field(default_factory=dict)
    closed_count: int = 0  # net of retractions, including sessions already forgotten
    converted_count: int = 0


@dataclass(frozen=True, slots=True)
class SessionRules:
    gap_ms: int
    max_length_ms: int
    allowed_lateness_ms: int


def session_id(user_id: str, start: int) -> str:
    """Deterministic: the same user and first event time give the same id on every run."""
    return hashlib.blake2b(f"{user_id}|{start}".encode(), digest_size=8).hexdigest()


def add_event(state: SessionState, event: Event, max_events: int | None = None) -> bool:
    """Hold the event for the sessions; False (not held) when ``max_events`` are held already.

    Why a cap: the held events are every event a late arrival could still regroup (sessions
    not yet final), re-split at each of the user's steps, so a user sending thousands of events
    an hour (a bot) would make each of its events cost more than the one before. The cap bounds
    that work and, with it, what derives from held events: a session's item and category lists
    and the rules' armed deadlines (each armed by an event given to the rules, and fired before
    the event is final)."""
    if max_events is not None and len(state.events) >= max_events:
        return False
    bisect.insort(state.events, SessionEvent(
        event.ts, event.event_id, event.event_type, event.item_id, event.category_id,
        event.scroll_depth, event.dwell_ms,
    ))
    return True


def split(events: list[SessionEvent], rules: SessionRules) -> list[list[SessionEvent]]:
    """The greedy split of time-sorted events into sessions."""
    sessions: list[list[SessionEvent]] = []
    for event in events:
        current = sessions[-1] if sessions else None
        if (current is None or event.ts - current[-1].ts >= rules.gap_ms
                or event.ts - current[0].ts >= rules.max_length_ms):
            sessions.append([event])
        else:
            current.append(event)
    return sessions


def closes_at(session: list[SessionEvent], rules: SessionRules) -> int:
    """The watermark at which no on-time event can join this session any more."""
    return min(session[-1].ts + rules.gap_ms, session[0].ts + rules.max_length_ms) - 1


def summarize(user_id: str, session: list[SessionEvent], status: str, revision: int) -> SessionSummary:
    counts: dict[str, int] = {}
    items: set[str] = set()
    categories: set[str] = set()
    max_scroll = 0.0
    dwell = 0
    for event in session:
        counts[event.event_type] = counts.get(event.event_type, 0) + 1
        if event.item_id is not None:
            items.add(event.item_id)
        if event.category_id is not None:
            categories.add(event.category_id)
        if event.scroll_depth is not None and event.scroll_depth > max_scroll:
            max_scroll = event.scroll_depth
        if event.dwell_ms:
            dwell += event.dwell_ms
    start = session[0].ts
    return SessionSummary(
        session_id=session_id(user_id, start), user_id=user_id, status=status, revision=revision,
        start=start, end=session[-1].ts, event_count=len(session), counts=dict(sorted(counts.items())),
        max_scroll_depth=max_scroll, dwell_ms=dwell, items=tuple(sorted(items)),
        categories=tuple(sorted(categories)), converted="purchase" in counts,
    )


def open_session(user_id: str, state: SessionState, rules: SessionRules) -> SessionSummary | None:
    """The user's latest session if it has not closed yet (features of "this visit")."""
    if not state.events:
        return None
    latest = split(state.events, rules)[-1]
    summary = summarize(user_id, latest, "open", 0)
    return None if summary.session_id in state.emitted else summary


def advance(user_id: str, state: SessionState, rules: SessionRules, watermark: int,
            end_of_input: bool = False) -> list[SessionSummary]:
    """Emit sessions that closed or changed, retract superseded ones, and forget final ones.

    Returns the emissions in session order; the caller folds them into the profile.
    """
    out: list[SessionSummary] = []
    sessions = split(state.events, rules)
    live_ids: set[str] = set()
    keep_from = 0
    for index, session in enumerate(sessions):
        if not end_of_input and watermark < closes_at(session, rules):
            live_ids.add(session_id(user_id, session[0].ts))
            continue
        sid = session_id(user_id, session[0].ts)
        live_ids.add(sid)
        previous = state.emitted.get(sid)
        if previous is None and sid in state.retired:
            summary = summarize(user_id, session, "updated", state.retired.pop(sid)[0] + 1)
        elif previous is None:
            summary = summarize(user_id, session, "closed", 1)
        else:
            summary = summarize(user_id, session, "updated", previous.revision + 1)
            if _same_content(summary, previous):
                summary = None
        if summary is not None:
            _count(state, previous, summary)
            state.emitted[sid] = summary
            out.append(summary)
        final = end_of_input or watermark >= session[-1].ts + rules.gap_ms + rules.allowed_lateness_ms
        if final and keep_from == index:
            keep_from = index + 1
    for sid in [sid for sid in state.emitted if sid not in live_ids]:
        retraction = _retraction(state.emitted.pop(sid))
        _count(state, retraction, None)
        state.retired[sid] = (retraction.revision, retraction.end)
        out.append(retraction)
    if keep_from:
        dropped = sessions[:keep_from]
        del state.events[: sum(len(s) for s in dropped)]
        for session in dropped:
            state.emitted.pop(session_id(user_id, session[0].ts), None)
    horizon = rules.gap_ms + rules.allowed_lateness_ms
    for sid in [sid for sid, (_, end) in state.retired.items() if end_of_input or watermark >= end + horizon]:
        del state.retired[sid]
    return out


def next_deadline(state: SessionState, rules: SessionRules, watermark: int) -> int | None:
    """The earliest watermark after ``watermark`` at which ``advance`` has something to do."""
    deadlines = [
        deadline
        for session in split(state.events, rules)
        for deadline in (closes_at(session, rules),
                         session[-1].ts + rules.gap_ms + rules.allowed_lateness_ms)
        if deadline > watermark
    ]
    return min(deadlines) if deadlines else None


def _count(state: SessionState, before: SessionSummary | None, after: SessionSummary | None) -> None:
    state.closed_count += (after is not None) - (before is not None)
    state.converted_count += (after is not None and after.converted) - (before is not None and before.converted)


def _same_content(a: SessionSummary, b: SessionSummary) -> bool:
    return replace(a, status=b.status, revision=b.revision) == b


def _retraction(gone: SessionSummary) -> SessionSummary:
    return replace(gone, status="retracted", revision=gone.revision + 1)
