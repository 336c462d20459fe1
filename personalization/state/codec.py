"""The user operator's keyed state as msgpack (msgspec), not as a pickled object graph.

A user's state is written back to Flink after every step that changed it. Pickle pays a Python
``__getstate__`` and a reduce for each of its ~40 small dataclass objects; msgspec encodes and
decodes the same dataclasses in C, about four times faster both ways (``python -m
bench.state_codec``, docs/performance.md).

Every object is a msgpack map by field name, so the evolution rule of ``core.evolvable`` still
holds: a field added with a default restores from state that lacks it, a removed one is ignored.
Decoding follows the annotations, so they must say what the values are: a field that holds
whatever number the input gave is ``int | float`` (a bare ``float`` would turn a stored ``3``
into ``3.0``, and the profile would render it so).

The bytes go into the same ``user-state-v1`` ValueState (``PICKLED_BYTE_ARRAY``; pickling bytes is
a copy). Two parts that grow with a busy user go to list states of their own beyond a bound
(``state.user_store``), where a step appends what it changed rather than re-encoding them:

- the event ids seen (``UserState.seen_event_ids``), beyond ``MAX_INLINE_IDS``: one entry per id
  (``seen_id_entry``);
- the events held for sessions (``SessionState.events``), beyond ``MAX_INLINE_HELD``: a log of
  their changes (``held_change_entry``: an event held, or a prefix forgotten), replayed on read.

Two more parts that a busy user's step seldom changes go, beyond ``MAX_INLINE_ITEMS`` items, to a
map state by name (``BIG_PARTS``), rewritten only at a step that changed them (``BigPart.token``):
the summaries of the sessions held and of the last closed one (each lists its items and
categories), and the open session's aggregates for the rules (its distinct items and categories).
And the categories counted (``UserState.categories``), beyond ``MAX_INLINE_ITEMS``, are a map
state of their own, category -> count, where a step puts the counts it raised.

The first byte says which parts are apart. State written before this codec holds the pickled
objects themselves: they are read as they are and written in this form at the user's next
change, so savepoints of earlier releases restore without a migration step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from personalization.core.aggregates import SessionAcc
from personalization.core.privacy import Stored, Suppressed
from personalization.core.sessions import DroppedThrough, SessionEvent, SessionSummary, replay_changes
from personalization.core.user import UserState

# Up to this many seen ids, and held events, a user's stay in the value: an ordinary user's step then
# makes one call into the JVM to write its state, not two or three (a list state call costs more
# than encoding a few ids or events).
MAX_INLINE_IDS = 64
MAX_INLINE_HELD = 64
MAX_INLINE_ITEMS = 64  # items and categories a big part lists
# The first byte: ``S`` an erasure marker; for a user state, ``U`` plus the parts kept apart:
# + 1 the seen ids (``V``), + 2 the held events (``W``), + 4 and + 8 the ``BIG_PARTS``, + 16 the categories.
_USER, IDS_APART, HELD_APART, SESSIONS_APART, SESSION_FEATURES_APART, _SUPPRESSED = ord("U"), 1, 2, 4, 8, b"S"
CATEGORIES_APART = 16
ALL_PARTS = 31
_encoder = msgspec.msgpack.Encoder()
_user_decoder = msgspec.msgpack.Decoder(UserState)
_decoders = {**{_USER + parts: _user_decoder for parts in range(ALL_PARTS + 1)},
             _SUPPRESSED[0]: msgspec.msgpack.Decoder(Suppressed)}
_held_event_encoder = msgspec.json.Encoder()
_held_event_decoder = msgspec.json.Decoder(SessionEvent)


class UnreadableState(ValueError):
    """Stored user state that this code cannot decode (e.g. a field's type changed incompatibly)."""


@dataclass(frozen=True)
class BigPart:
    """A part of the user state kept in the parts map state under ``name`` while it lists more than
    ``MAX_INLINE_ITEMS`` items. ``token`` is equal (``==``) for as long as the part is unchanged,
    and cheap to compare then (it holds the part's objects: equality tries identity first)."""

    flag: int
    name: str
    get: Callable[[UserState], Any]
    put: Callable[[UserState, Any], None]
    empty: Any
    items: Callable[[UserState], int]
    token: Callable[[UserState], Any]
    decoder: msgspec.msgpack.Decoder

    def encode(self, value: UserState) -> bytes:
        return _encoder.encode(self.get(value))

    def decode(self, stored: bytes) -> Any:
        return self.decoder.decode(stored)


def _put_sessions(value: UserState, part: tuple) -> None:
    value.session_state.emitted, value.session_state.retired, value.last_session = part


def _put_session_features(value: UserState, part: SessionAcc | None) -> None:
    value.features.session = part


def _summarized_items(value: UserState) -> int:
    last = value.last_session  # runs at every write of every user: no list built
    held = sum(len(summary.items) + len(summary.categories) for summary in value.session_state.emitted.values())
    return held + (len(last.items) + len(last.categories) if last is not None else 0)


def _session_feature_items(value: UserState) -> int:
    session = value.features.session
    return sum(map(len, session.distinct.values())) if session is not None else 0


def _session_features_token(value: UserState) -> tuple:
    # Every change to a session's aggregates adds an event to them: one count more.
    session = value.features.session
    return session, sum(session.acc.counts.values()) if session is not None else 0


BIG_PARTS = (
    BigPart(SESSIONS_APART, "sessions",
            get=lambda value: (value.session_state.emitted, value.session_state.retired, value.last_session),
            put=_put_sessions, empty=({}, {}, None), items=_summarized_items,
            token=lambda value: (value.last_session, tuple(value.session_state.emitted.items()),
                                 tuple(value.session_state.retired.items())),
            decoder=msgspec.msgpack.Decoder(
                tuple[dict[str, SessionSummary], dict[str, tuple[int, int]], SessionSummary | None])),
    BigPart(SESSION_FEATURES_APART, "session-features",
            get=lambda value: value.features.session, put=_put_session_features, empty=None,
            items=_session_feature_items, token=_session_features_token,
            decoder=msgspec.msgpack.Decoder(SessionAcc | None)),
)


def encode_user_state(value: UserState | Suppressed, parts: int | None = None) -> bytes:
    """The value, without the parts kept in states of their own: ``parts`` (flags), by default
    those ``parts_apart`` names."""
    if not isinstance(value, UserState):
        return _SUPPRESSED + _encoder.encode(value)
    if parts is None:
        parts = parts_apart(value)
    if not parts:
        return bytes((_USER,)) + _encoder.encode(value)
    seen, sessions, categories = value.seen_event_ids, value.session_state, value.categories
    held = sessions.events
    big = [(part, part.get(value)) for part in BIG_PARTS if parts & part.flag]
    if parts & IDS_APART:
        value.seen_event_ids = {}
    if parts & HELD_APART:
        sessions.events = []
    if parts & CATEGORIES_APART:
        value.categories = {}
    for part, _ in big:
        part.put(value, part.empty)
    try:
        return bytes((_USER + parts,)) + _encoder.encode(value)
    finally:
        value.seen_event_ids, sessions.events, value.categories = seen, held, categories
        for part, kept in big:
            part.put(value, kept)


def decode_user_state(stored: bytes | UserState | Suppressed,
                      seen_id_entries: Callable[[], Iterable[str]] = tuple,
                      held_change_entries: Callable[[], Iterable[str]] = tuple,
                      big_part: Callable[[str], bytes | None] = lambda name: None,
                      category_counts: Callable[[], Iterable[tuple[str, int]]] = tuple) -> Stored:
    """A stored value as the live object; an object pickled by an earlier release as it is.
    ``seen_id_entries`` / ``held_change_entries``: the list states' entries, ``big_part``: a
    part of the parts map state by name, and ``category_counts``: the categories map state's
    entries, each read only for a state that has that part apart."""
    if not isinstance(stored, bytes):
        return stored
    decoder = _decoders.get(stored[0]) if stored else None
    if decoder is None:
        raise UnreadableState(f"stored user state starts with {stored[:1]!r}, none of "
                              f"{bytes(sorted(_decoders))!r}")
    try:
        value = decoder.decode(memoryview(stored)[1:])
    except msgspec.MsgspecError as err:
        raise UnreadableState(f"stored user state does not decode as {decoder.type.__name__}: {err}") from err
    parts = stored_parts_apart(stored)
    if parts & IDS_APART:
        value.seen_event_ids = seen_ids(seen_id_entries())
    if parts & CATEGORIES_APART:
        value.categories = dict(category_counts())
    if parts & HELD_APART:
        try:
            replay_changes(value.session_state.events, held_changes(held_change_entries()))
        except msgspec.MsgspecError as err:
            raise UnreadableState(f"a stored change to the held events does not decode: {err}") from err
    for part in BIG_PARTS:
        if parts & part.flag:
            kept = big_part(part.name)
            if kept is None:
                raise UnreadableState(f"stored user state has its {part.name!r} apart, and they are not there")
            try:
                part.put(value, part.decode(kept))
            except msgspec.MsgspecError as err:
                raise UnreadableState(f"the stored {part.name!r} do not decode: {err}") from err
    return value


def parts_apart(value: UserState) -> int:
    """Which parts of a user's state go to states of their own (``IDS_APART`` | ``HELD_APART`` |
    ``CATEGORIES_APART`` | the ``BIG_PARTS``' flags)."""
    parts = ((len(value.seen_event_ids) > MAX_INLINE_IDS and IDS_APART)
             | (len(value.session_state.events) > MAX_INLINE_HELD and HELD_APART)
             | (len(value.categories) > MAX_INLINE_ITEMS and CATEGORIES_APART))
    for part in BIG_PARTS:
        if part.items(value) > MAX_INLINE_ITEMS:
            parts |= part.flag
    return parts


def stored_parts_apart(stored: object) -> int:
    """Which parts of a stored value are in states of their own (0 for anything but a user state)."""
    if isinstance(stored, bytes) and stored and _USER <= stored[0] <= _USER + ALL_PARTS:
        return stored[0] - _USER
    return 0


def seen_id_entry(event_id: str, ts: int) -> str:
    """One seen id as an entry of the list state: ``"<ts> <event id>"`` (an id may hold spaces, a
    number does not)."""
    return f"{ts} {event_id}"


def seen_ids(entries: Iterable[str]) -> dict[str, int]:
    """Entries back as ``UserState.seen_event_ids``, in the list's order: the order they arrived in."""
    seen = {}
    for entry in entries:
        ts, _, event_id = entry.partition(" ")
        seen[event_id] = int(ts)
    return seen


def held_change_entry(change: SessionEvent | DroppedThrough) -> str:
    """One change to the held events as an entry of their list state: ``+`` and the event held,
    or ``-`` and the last event of a forgotten prefix (the event as a JSON array)."""
    if isinstance(change, DroppedThrough):
        return "-" + _held_event_encoder.encode(change.last).decode()
    return "+" + _held_event_encoder.encode(change).decode()


def held_changes(entries: Iterable[str]) -> Iterator[SessionEvent | DroppedThrough]:
    """Entries back as changes, in the list's order (the order they were made in)."""
    for entry in entries:
        event = _held_event_decoder.decode(entry[1:])
        yield DroppedThrough(event) if entry[:1] == "-" else event
