"""State classes restore from pickles written before a field was added."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import pytest

from personalization.core import evolvable as module
from personalization.core.evolvable import evolvable
from personalization.core.learning.interests import Interests
from personalization.core.learning.propensity import LabelState, Pending


@evolvable
@dataclass(slots=True)
class Old:
    a: int
    b: str = "b"


def _reload_as_new(blob: bytes):
    """Unpickle ``blob`` (written by ``Old``) into a class of the same name with more fields."""

    @evolvable
    @dataclass(slots=True)
    class Old:  # noqa: F811 - same qualified name, new shape
        a: int
        added_number: int = 7
        b: str = "b"
        added_list: list = field(default_factory=lambda: [1])

    module.Old = Old
    Old.__module__ = module.__name__
    try:
        return pickle.loads(blob)
    finally:
        del module.Old


def test_an_added_field_takes_its_default_and_existing_fields_keep_their_values():
    Old.__module__ = module.__name__
    module.Old = Old
    blob = pickle.dumps(Old(a=3, b="kept"))
    del module.Old
    restored = _reload_as_new(blob)
    assert (restored.a, restored.b, restored.added_number, restored.added_list) == (3, "kept", 7, [1])


def test_a_missing_required_field_is_an_error_not_a_silent_shift():
    @evolvable
    @dataclass(slots=True)
    class Strict:
        a: int
        b: int

    restored = Strict.__new__(Strict)
    with pytest.raises(TypeError, match="lacks required field 'b'"):
        restored.__setstate__({"a": 1})


def test_positional_keeps_the_pickled_form_of_a_slots_dataclass():
    """``@positional`` classes restore from pickles written before they were decorated."""

    @dataclass(frozen=True, slots=True)
    class Plain:
        as_of: int | None = None
        scores: dict = field(default_factory=dict)

    state = Interests(as_of=5, scores={"c": 1.5})
    assert state.__getstate__() == Plain(as_of=5, scores={"c": 1.5}).__getstate__() == [5, {"c": 1.5}]
    assert pickle.loads(pickle.dumps(state)) == state


def test_positional_fills_a_field_appended_since_the_pickle_with_its_default():
    """``LabelState.converted`` was appended: a savepoint's label states hold two fields."""
    restored = LabelState.__new__(LabelState)
    restored.__setstate__([{"s": Pending(1, {}, 0.1)}, {}])
    assert restored == LabelState(pending={"s": Pending(1, {}, 0.1)}, labelled={}, converted={})
    restored.converted["t"] = Pending(2, {}, 0.2)
    assert LabelState().converted == {}   # the default factory, not one shared dict
