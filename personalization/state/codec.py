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

The first byte says which parts are apart. State written before this codec holds the pickled
objects themselves: they are read as they are and written in this form at the user's next
change, so savepoints of earlier releases restore without a migration step.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import msgspec

from personalization.core.privacy import Stored, Suppressed
from personalization.core.sessions import DroppedThrough, SessionEvent, replay_changes
from personalization.core.user import UserState

# Up to this many seen ids, and held events, a user's stay in the value: an ordinary user's step then
# makes one call into the JVM to write its state, not two or three (a list state call costs more
# than encoding a few ids or events).
MAX_INLINE_IDS = 64
MAX_INLINE_HELD = 64
# The first byte: ``S`` an erasure marker; for a user state, ``U`` plus the parts kept apart:
# + 1 the seen ids (``V``), + 2 the held events (``W``), both ``X``.
_USER, IDS_APART, HELD_APART, _SUPPRESSED = ord("U"), 1, 2, b"S"
_encoder = msgspec.msgpack.Encoder()
_user_decoder = msgspec.msgpack.Decoder(UserState)
_decoders = {**{_USER + parts: _user_decoder for parts in range(4)}, _SUPPRESSED[0]: msgspec.msgpack.Decoder(Suppressed)}
_held_event_encoder = msgspec.json.Encoder()
_held_event_decoder = msgspec.json.Decoder(SessionEvent)


class UnreadableState(ValueError):
    """Stored user state that this code cannot decode (e.g. a field's type changed incompatibly)."""


def encode_user_state(value: UserState | Suppressed) -> bytes:
    """The value, without the parts ``parts_apart`` names (those are in their list states)."""
    if not isinstance(value, UserState):
        return _SUPPRESSED + _encoder.encode(value)
    parts = parts_apart(value)
    if not parts:
        return bytes((_USER,)) + _encoder.encode(value)
    seen, sessions = value.seen_event_ids, value.session_state
    held = sessions.events
    if parts & IDS_APART:
        value.seen_event_ids = {}
    if parts & HELD_APART:
        sessions.events = []
    try:
        return bytes((_USER + parts,)) + _encoder.encode(value)
    finally:
        value.seen_event_ids, sessions.events = seen, held


def decode_user_state(stored: bytes | UserState | Suppressed,
                      seen_id_entries: Callable[[], Iterable[str]] = tuple,
                      held_change_entries: Callable[[], Iterable[str]] = tuple) -> Stored:
    """A stored value as the live object; an object pickled by an earlier release as it is.
    ``seen_id_entries`` / ``held_change_entries``: the list states' entries, read only for a
    state whose ids / held events are there."""
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
    if parts & HELD_APART:
        try:
            replay_changes(value.session_state.events, held_changes(held_change_entries()))
        except msgspec.MsgspecError as err:
            raise UnreadableState(f"a stored change to the held events does not decode: {err}") from err
    return value


def parts_apart(value: UserState) -> int:
    """Which parts of a user's state go to their list states: ``IDS_APART`` | ``HELD_APART``."""
    return ((len(value.seen_event_ids) > MAX_INLINE_IDS and IDS_APART)
            | (len(value.session_state.events) > MAX_INLINE_HELD and HELD_APART))


def stored_parts_apart(stored: object) -> int:
    """Which parts of a stored value are in the list states (0 for anything but a user state)."""
    if isinstance(stored, bytes) and stored and _USER <= stored[0] <= _USER + 3:
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
