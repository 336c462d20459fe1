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
a copy). The event ids seen (``UserState.seen_event_ids``) are in them while a user has at most
``MAX_INLINE_IDS``; a busier user's are entries of a list state of their own (``seen_id_entry``,
``state.user_store``), where a step appends the id it added. State written before this codec holds
the pickled objects themselves: they are read as they are and written in this form at the user's
next change, so savepoints of earlier releases restore without a migration step.
"""

from __future__ import annotations

from typing import Callable, Iterable

import msgspec

from personalization.core.privacy import Stored, Suppressed
from personalization.core.user import UserState

# Up to this many seen ids a user's ids stay in the value: an ordinary user's step then makes one
# call into the JVM to write its state, not two (a list state call costs more than encoding a few ids).
MAX_INLINE_IDS = 64
# The first byte: which of the two a stored value is; ``U``: a user state with its seen ids inline,
# ``V``: one whose seen ids are in the list state.
_USER_INLINE_IDS, _USER, _SUPPRESSED = b"U", b"V", b"S"
_encoder = msgspec.msgpack.Encoder()
_user_decoder = msgspec.msgpack.Decoder(UserState)
_decoders = {_USER_INLINE_IDS[0]: _user_decoder, _USER[0]: _user_decoder,
             _SUPPRESSED[0]: msgspec.msgpack.Decoder(Suppressed)}


class UnreadableState(ValueError):
    """Stored user state that this code cannot decode (e.g. a field's type changed incompatibly)."""


def encode_user_state(value: UserState | Suppressed) -> bytes:
    """The value; without its seen ids if ``keeps_ids_apart`` (those are ``seen_id_entry`` entries)."""
    if not isinstance(value, UserState):
        return _SUPPRESSED + _encoder.encode(value)
    if not keeps_ids_apart(value):
        return _USER_INLINE_IDS + _encoder.encode(value)
    seen, value.seen_event_ids = value.seen_event_ids, {}
    try:
        return _USER + _encoder.encode(value)
    finally:
        value.seen_event_ids = seen


def decode_user_state(stored: bytes | UserState | Suppressed,
                      seen_id_entries: Callable[[], Iterable[str]] = tuple) -> Stored:
    """A stored value as the live object; an object pickled by an earlier release as it is.
    ``seen_id_entries``: the list state's entries, read only for a state whose ids are there."""
    if not isinstance(stored, bytes):
        return stored
    decoder = _decoders.get(stored[0]) if stored else None
    if decoder is None:
        raise UnreadableState(f"stored user state starts with {stored[:1]!r}, none of "
                              f"{_USER!r}, {_USER_INLINE_IDS!r} or {_SUPPRESSED!r}")
    try:
        value = decoder.decode(memoryview(stored)[1:])
    except msgspec.MsgspecError as err:
        raise UnreadableState(f"stored user state does not decode as {decoder.type.__name__}: {err}") from err
    if ids_apart(stored):
        value.seen_event_ids = seen_ids(seen_id_entries())
    return value


def keeps_ids_apart(value: UserState) -> bool:
    """Whether a user's seen ids are written to the list state rather than inline."""
    return len(value.seen_event_ids) > MAX_INLINE_IDS


def ids_apart(stored: object) -> bool:
    """Whether a stored value is a user state whose seen ids are in the list state."""
    return isinstance(stored, bytes) and stored[:1] == _USER


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
