"""Event-time sessions that do not depend on arrival order.

A user's sessions are the greedy split of their events sorted by time: a new session starts
when the gap to the previous event reaches ``gap_ms`` or the session would exceed
``max_length_ms``. The tracker keeps the (compact) events of every session that a late event
could still change, and recomputes the split from them, so a shuffled stream, a late event
that bridges two sessions, or one that moves a session's start all give exactly the sessions
of the sorted stream. Events are dropped once the watermark has passed
``end + gap + allowed_lateness``: no admissible event can touch that session any more.

The split itself is kept on the live state object (``SessionState.split_of``), not recomputed:
an event added in time order extends it in O(1), one added out of order re-decides the greedy
split from that event only until it falls back in step with the previous split, and a session
already emitted is summarized again only if an event was added at or before its end. So a
user's step costs O(log held + sessions held), not O(held), below the ``max_events`` cap too.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

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

    def as_record(self) -> dict[str, Any]:
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


@dataclass(frozen=True, slots=True)
class SessionRules:
    gap_ms: int
    max_length_ms: int
    allowed_lateness_ms: int


@dataclass(slots=True)
class Split:
    """The greedy split of ``SessionState.events`` under ``rules``, kept up to date as events are
    added: the index of each session's first event, and the earliest time of an event added
    since the last ``advance`` (sessions that end before it have not changed since)."""

    rules: SessionRules
    starts: list[int]
    touched: int | None
    # The latest session's totals over its first ``tallied`` events, for the profile (written at
    # every step): appends add to them; any other change to that session starts them again.
    tallied: int = 0
    dwell_ms: int = 0
    max_scroll_depth: int | float = 0.0
    converted: bool = False

    def retally(self) -> None:
        self.tallied, self.dwell_ms, self.max_scroll_depth, self.converted = 0, 0, 0.0, False


class OpenSession(NamedTuple):
    """The latest session while it is still open, as the profile shows it."""

    session_id: str
    start: int
    end: int
    event_count: int
    max_scroll_depth: int | float
    dwell_ms: int
    converted: bool


class DroppedThrough(NamedTuple):
    """A change to the held events: every event up to and including ``last`` was forgotten.
    Named by the last event, not by a count, so that a log of changes means the same whatever
    entries before it are gone (each entry of a list state expires on its own)."""

    last: SessionEvent


@evolvable
@dataclass  # not slots: ``_split`` lives in the instance dict, so neither msgspec nor pickle writes it
class SessionState:
    events: list[SessionEvent] = field(default_factory=list)
    emitted: dict[str, SessionSummary] = field(default_factory=dict)
    # Retracted ids with (last revision, end): a later split can bring an id back, and its
    # revisions must keep increasing; forgotten with the sessions around them.
    retired: dict[str, tuple[int, int]] = field(default_factory=dict)
    closed_count: int = 0  # net of retractions, including sessions already forgotten
    converted_count: int = 0
    # Derived from ``events``, on the live object only (not in Flink state): rebuilt in one pass
    # at the first use after the state was read, then kept up to date event by event.
    _split = None  # a Split; not annotated, so not a dataclass field (msgspec would encode it)
    # The changes to ``events`` not written to Flink state yet, oldest first, while a store keeps
    # the events apart from the rest of the state (``state.user_store``; None otherwise): each
    # event held, and a ``DroppedThrough`` for each prefix forgotten. Also on the live object only.
    _changes = None

    def split_of(self, rules: SessionRules) -> Split:
        split = self._split
        if split is None or split.rules != rules:  # read from state, or another configuration
            events = self.events
            split = self._split = Split(rules, _starts(events, rules), events[0].ts if events else None)
        return split


def session_id(user_id: str, start: int) -> str:
    """Deterministic: the same user and first event time give the same id on every run."""
    return hashlib.blake2b(f"{user_id}|{start}".encode(), digest_size=8).hexdigest()


def add_event(state: SessionState, event: Event, max_events: int | None = None) -> bool:
    """Hold the event for the sessions; False (not held) when ``max_events`` are held already.

    Why a cap: the held events are every event a late arrival could still regroup (sessions
    not yet final), so a user sending thousands of events an hour (a bot) would hold them all.
    The cap bounds that memory and what derives from held events: a session's item and category
    lists, the work of summarizing it, and the rules' armed deadlines (each armed by an event
    given to the rules, and fired before the event is final)."""
    events = state.events
    if max_events is not None and len(events) >= max_events:
        return False
    held = SessionEvent(event.ts, event.event_id, event.event_type, event.item_id, event.category_id,
                        event.scroll_depth, event.dwell_ms)
    at = bisect.bisect_right(events, held)
    events.insert(at, held)
    if state._changes is not None:
        state._changes.append(held)
    if state._split is not None:
        _resplit(state._split, events, at)
    return True


def replay_changes(events: list[SessionEvent], changes: Iterable[SessionEvent | DroppedThrough]) -> None:
    """Apply logged changes to ``events`` as ``add_event`` and ``advance`` made them: the same
    list, whatever entries older than what is still held are missing from the log."""
    for change in changes:
        if isinstance(change, DroppedThrough):
            del events[:bisect.bisect_right(events, change.last)]
        else:
            bisect.insort_right(events, change)


def split(events: list[SessionEvent], rules: SessionRules) -> list[list[SessionEvent]]:
    """The greedy split of time-sorted events into sessions."""
    return [events[begin:end] for begin, end in _ranges(_starts(events, rules), len(events))]


def _opens(event: SessionEvent, previous: SessionEvent, first: SessionEvent, rules: SessionRules) -> bool:
    """The greedy rule: ``event`` starts a new session after ``previous``, in a session that
    began with ``first``."""
    return event.ts - previous.ts >= rules.gap_ms or event.ts - first.ts >= rules.max_length_ms


def _starts(events: list[SessionEvent], rules: SessionRules) -> list[int]:
    starts: list[int] = []
    for index, event in enumerate(events):
        if not starts or _opens(event, events[index - 1], events[starts[-1]], rules):
            starts.append(index)
    return starts


def _resplit(split: Split, events: list[SessionEvent], at: int) -> None:
    """Bring ``split`` up to date after an event was inserted at index ``at``.

    The greedy decisions of the events before it do not change. From the new event on they are
    made again, until an event's session starts where it started before: from there every
    decision is the one made before (the same previous event, the same first event)."""
    starts, rules = split.starts, split.rules
    holder = bisect.bisect_right(starts, at - 1) - 1  # the session of the event before (-1: none)
    later = [start + 1 for start in starts[holder + 1:]]  # the sessions after it, shifted by one
    old_start = starts[holder] if holder >= 0 else None  # where the current event's session began
    new = starts[: holder + 1]
    step = 0
    for index in range(at, len(events)):
        if not new or _opens(events[index], events[index - 1], events[new[-1]], rules):
            new.append(index)
        if index > at:
            while step < len(later) and later[step] <= index:
                old_start = later[step]
                step += 1
            if new[-1] == old_start:
                new += later[step:]
                break
    latest_before = starts[-1] + (starts[-1] >= at) if starts else None
    if new[-1] != latest_before or new[-1] < at < len(events) - 1:  # not an append to the latest session
        split.retally()
    split.starts = new
    split.touched = events[at].ts if split.touched is None else min(split.touched, events[at].ts)


def _ranges(starts: list[int], count: int) -> Iterator[tuple[int, int]]:
    """``(begin, end)`` of each session: ``events[begin:end]``."""
    return zip(starts, [*starts[1:], count])


def closes_at(session: list[SessionEvent], rules: SessionRules) -> int:
    """The watermark at which no on-time event can join this session any more."""
    return _closes_at(session[0], session[-1], rules)


def _closes_at(first: SessionEvent, last: SessionEvent, rules: SessionRules) -> int:
    return min(last.ts + rules.gap_ms, first.ts + rules.max_length_ms) - 1


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


def open_session(user_id: str, state: SessionState, rules: SessionRules) -> OpenSession | None:
    """The user's latest session if it has not closed yet (features of "this visit")."""
    events = state.events
    if not events:
        return None
    split = state.split_of(rules)
    begin = split.starts[-1]
    sid = session_id(user_id, events[begin].ts)
    if sid in state.emitted:
        return None
    for event in events[begin + split.tallied:]:
        if event.scroll_depth is not None and event.scroll_depth > split.max_scroll_depth:
            split.max_scroll_depth = event.scroll_depth
        split.dwell_ms += event.dwell_ms or 0
        split.converted = split.converted or event.event_type == "purchase"
    split.tallied = len(events) - begin
    return OpenSession(sid, events[begin].ts, events[-1].ts, len(events) - begin, split.max_scroll_depth,
                       split.dwell_ms, split.converted)


def advance(user_id: str, state: SessionState, rules: SessionRules, watermark: int,
            end_of_input: bool = False) -> list[SessionSummary]:
    """Emit sessions that closed or changed, retract superseded ones, and forget final ones.

    Returns the emissions in session order; the caller folds them into the profile.
    """
    out: list[SessionSummary] = []
    events, split = state.events, state.split_of(rules)
    touched, still_touched = split.touched, None
    live_ids: set[str] = set()
    keep_from = 0
    for index, (begin, end) in enumerate(_ranges(split.starts, len(events))):
        first, last = events[begin], events[end - 1]
        sid = session_id(user_id, first.ts)
        live_ids.add(sid)
        if not end_of_input and watermark < _closes_at(first, last, rules):
            if still_touched is None and touched is not None and last.ts >= touched:
                still_touched = first.ts  # changed, not closed yet: compared when it closes
            continue
        previous = state.emitted.get(sid)
        if previous is not None and (touched is None or last.ts < touched):
            summary = None  # emitted, and nothing was added at or before its end since
        elif previous is None and sid in state.retired:
            summary = summarize(user_id, events[begin:end], "updated", state.retired.pop(sid)[0] + 1)
        elif previous is None:
            summary = summarize(user_id, events[begin:end], "closed", 1)
        else:
            summary = summarize(user_id, events[begin:end], "updated", previous.revision + 1)
            if _same_content(summary, previous):
                summary = None
        if summary is not None:
            _count(state, previous, summary)
            state.emitted[sid] = summary
            out.append(summary)
        final = end_of_input or watermark >= last.ts + rules.gap_ms + rules.allowed_lateness_ms
        if final and keep_from == index:
            keep_from = index + 1
    for sid in [sid for sid in state.emitted if sid not in live_ids]:
        retraction = _retraction(state.emitted.pop(sid))
        _count(state, retraction, None)
        state.retired[sid] = (retraction.revision, retraction.end)
        out.append(retraction)
    if keep_from:
        dropped = split.starts[keep_from] if keep_from < len(split.starts) else len(events)
        for begin in split.starts[:keep_from]:
            state.emitted.pop(session_id(user_id, events[begin].ts), None)
        if state._changes is not None:
            state._changes.append(DroppedThrough(events[dropped - 1]))
        del events[:dropped]
        split.starts = [start - dropped for start in split.starts[keep_from:]]
        if not split.starts:
            split.retally()
    split.touched = still_touched
    horizon = rules.gap_ms + rules.allowed_lateness_ms
    for sid in [sid for sid, (_, end) in state.retired.items() if end_of_input or watermark >= end + horizon]:
        del state.retired[sid]
    return out


def next_deadline(state: SessionState, rules: SessionRules, watermark: int) -> int | None:
    """The earliest watermark after ``watermark`` at which ``advance`` has something to do."""
    events = state.events
    deadlines = [
        deadline
        for begin, end in _ranges(state.split_of(rules).starts, len(events))
        for deadline in (_closes_at(events[begin], events[end - 1], rules),
                         events[end - 1].ts + rules.gap_ms + rules.allowed_lateness_ms)
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
