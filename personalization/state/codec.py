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
a copy). State written before this codec holds the pickled objects themselves: they are read as
they are and written in this form at the user's next change, so savepoints of earlier releases
restore without a migration step.
"""

from __future__ import annotations

import msgspec

from personalization.core.privacy import Stored, Suppressed
from personalization.core.user import UserState

_USER, _SUPPRESSED = b"U", b"S"  # the first byte: which of the two a stored value is
_encoder = msgspec.msgpack.Encoder()
_decoders = {_USER[0]: msgspec.msgpack.Decoder(UserState), _SUPPRESSED[0]: msgspec.msgpack.Decoder(Suppressed)}


class UnreadableState(ValueError):
    """Stored user state that this code cannot decode (e.g. a field's type changed incompatibly)."""


def encode_user_state(value: UserState | Suppressed) -> bytes:
    return (_USER if isinstance(value, UserState) else _SUPPRESSED) + _encoder.encode(value)


def decode_user_state(stored: bytes | UserState | Suppressed) -> Stored:
    """A stored value as the live object; an object pickled by an earlier release as it is."""
    if not isinstance(stored, bytes):
        return stored
    decoder = _decoders.get(stored[0]) if stored else None
    if decoder is None:
        raise UnreadableState(f"stored user state starts with {stored[:1]!r}, neither {_USER!r} nor {_SUPPRESSED!r}")
    try:
        return decoder.decode(memoryview(stored)[1:])
    except msgspec.MsgspecError as err:
        raise UnreadableState(f"stored user state does not decode as {decoder.type.__name__}: {err}") from err
