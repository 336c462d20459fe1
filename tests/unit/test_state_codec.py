"""The user state's msgpack codec (personalization.state.codec): every value back with its type,
fields evolve by name, an earlier release's pickled objects still read, and bytes it cannot read
are a clear error."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import msgspec
import pytest

from personalization.config.settings import load_settings
from personalization.core.events import Event
from personalization.core.privacy import GRANTED, Suppressed
from personalization.core.user import END_OF_INPUT, UserState
from personalization.wiring import user_logic
from personalization.config.rules import load_rules
from personalization.state.cached import CachedValueState
from personalization.core.sessions import SessionEvent
from personalization.state.codec import (BIG_PARTS, MAX_INLINE_HELD, MAX_INLINE_IDS, MAX_INLINE_ITEMS, UnreadableState,
                                         decode_user_state, encode_user_state, held_change_entry, parts_apart,
                                         seen_id_entry)
from tests.unit.test_state_cached import OneKeyState

T = 1_511_658_000_000


def typed(value):
    """``value`` with each leaf's type beside it (sets sorted): equal only for the same values of the
    same types, so ``3`` and ``3.0``, or a tuple and a list, differ."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value).__name__, tuple(typed(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return "dict", tuple((typed(k), typed(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return type(value).__name__, tuple(sorted((typed(v) for v in value), key=repr))
    if isinstance(value, (list, tuple)):
        return type(value).__name__, tuple(typed(v) for v in value)
    return type(value).__name__, value


def entries_of(state: UserState) -> list[str]:
    """The state's seen ids as the list state holds them (``state.user_store`` writes them)."""
    return [seen_id_entry(event_id, ts) for event_id, ts in state.seen_event_ids.items()]


def held_entries_of(state: UserState) -> list[str]:
    """The state's held events as their list state holds them after a rewrite."""
    return [held_change_entry(event) for event in state.session_state.events]


def big_parts_of(state: UserState) -> dict[str, bytes]:
    """The state's big parts as the map state holds them."""
    return {part.name: part.encode(state) for part in BIG_PARTS}


def round_trip(state: UserState):
    return decode_user_state(encode_user_state(state), lambda: entries_of(state), lambda: held_entries_of(state),
                             big_parts_of(state).get)


def _ev(eid: str, ts: int, etype: str, user: str = "u1", **fields) -> Event:
    return Event(event_id=eid, event_type=etype, ts=ts, user_id=user, **fields)


@pytest.fixture(scope="module")
def rich_state() -> UserState:
    """A state with every part filled: sessions closed and open, segments and their pending
    changes, learning, an experiment, devices, consent, a stitched anonymous id, and numbers given
    as ints where floats are usual."""
    settings = load_settings(None, ["experiments=[{name: ab, variants: [{name: a}, {name: b}], "
                                    "start: 0, end: 9999999999999}]"])
    logic = user_logic(settings, load_rules(settings))
    state = logic.new_state("u1")
    state.consent = GRANTED
    changes = []
    events = [
        _ev("x", T, "exposure", experiment="ab", variant="a"),
        _ev("p1", T + 1_000, "page_view", scroll_depth=1, dwell_ms=30_000, user_agent="Mozilla/5.0 (iPhone)"),
        _ev("v1", T + 2_000, "product_view", item_id="i1", category_id="c1", dwell_ms=12_000),
        _ev("c1", T + 3_000, "add_to_cart", item_id="i1", category_id="c1"),
        _ev("b1", T + 4_000, "purchase", item_id="i1", category_id="c1", revenue=25),
        _ev("p2", T + 4 * 3_600_000, "page_view", scroll_depth=0.5),
    ]
    for event in events:
        for result in (logic.on_event(state, event, event.ts - 10_000), logic.on_timer(state, event.ts)):
            changes += [change.as_record() for change in result.changes]
    logic.merge(state, "anon-1", (_ev("a1", T + 500, "page_view", user="anon-1"),), T, 10)
    state.unwritten_changes = changes
    filled = {"changes": changes, "last_session": state.last_session, "experiments": state.experiments,
              "learning": state.learning, "anonymous_ids": state.anonymous_ids, "devices": state.devices,
              "open session": state.session_state.events, "segments": state.segments.members}
    assert [part for part, value in filled.items() if not value] == []
    assert any(type(v) is int for v in state.features.lifetime.sums.values())
    assert type(state.max_scroll_depth) is int
    return state


def test_a_state_with_every_part_filled_comes_back_with_every_value_and_type(rich_state):
    assert typed(decode_user_state(encode_user_state(rich_state))) == typed(rich_state)  # its few ids inline
    busy = copy.deepcopy(rich_state)
    busy.seen_event_ids = {f"e {n}": T + n for n in range(MAX_INLINE_IDS + 1)}
    assert decode_user_state(encode_user_state(busy)).seen_event_ids == {}  # a busy user's: in the list state
    assert typed(round_trip(busy)) == typed(busy)
    held = busy.session_state.events
    held.extend(SessionEvent(held[-1].ts + n, f"h {n}", "scroll", None, None, n if n % 2 else n + 0.5, None)
                for n in range(1, MAX_INLINE_HELD + 1))
    assert len(held) > MAX_INLINE_HELD
    assert decode_user_state(encode_user_state(busy), lambda: entries_of(busy)).session_state.events == []
    assert held and typed(round_trip(busy)) == typed(busy)  # ids and held events each in their list state
    assert busy.session_state.events is held  # encoding put the live object's parts back
    last, session = busy.last_session, busy.features.session
    busy.last_session = dataclasses.replace(last, items=tuple(f"i {n}" for n in range(MAX_INLINE_ITEMS + 1)))
    session.distinct["item_id"] = {f"i {n}" for n in range(MAX_INLINE_ITEMS + 1)}
    assert parts_apart(busy) == 15  # every part apart
    assert typed(round_trip(busy)) == typed(busy)
    assert busy.features.session is session and busy.last_session.items[-1] == f"i {MAX_INLINE_ITEMS}"
    with pytest.raises(UnreadableState, match="has its 'session-features' apart, and they are not there"):
        decode_user_state(encode_user_state(busy), lambda: entries_of(busy), lambda: held_entries_of(busy),
                          {"sessions": big_parts_of(busy)["sessions"]}.get)


def test_a_closed_state_and_an_erasure_marker_come_back(rich_state):
    logic = user_logic(load_settings())
    closed = logic.new_state("u2")
    logic.on_event(closed, _ev("e", T, "page_view", user="u2"), T)
    logic.on_timer(closed, END_OF_INPUT)
    assert typed(round_trip(closed)) == typed(closed)
    marker = Suppressed("req-1", T)
    assert decode_user_state(encode_user_state(marker)) == marker
    assert decode_user_state(encode_user_state(Suppressed())) == Suppressed()


def test_an_object_pickled_by_an_earlier_release_is_read_as_it_is(rich_state):
    """The state of savepoints taken before this codec: the pickled object itself."""
    legacy = pickle.loads(pickle.dumps(rich_state))
    assert decode_user_state(legacy) is legacy


def test_fields_evolve_by_name_added_ones_take_their_default_removed_ones_are_ignored():
    older = b"U" + msgspec.msgpack.encode({"user_id": "u1", "version": 3, "a_field_since_removed": [1, 2]})
    restored = decode_user_state(older)
    assert (restored.user_id, restored.version) == ("u1", 3)
    assert typed(restored) == typed(dataclasses.replace(UserState("u1"), version=3))


@pytest.mark.parametrize(("stored", "says"), [
    (b"", "starts with b''"),
    (b"!" + msgspec.msgpack.encode({"user_id": "u1"}), "starts with b'!'"),
    (b"U" + bytes(range(256)) * 4096, "does not decode as UserState"),
    (b"U" + msgspec.msgpack.encode({"user_id": "u1", "version": "three"}), "Expected `int`, got `str`"),
    (b"S" + msgspec.msgpack.encode([1, 2]), "does not decode as Suppressed"),
    (b"W" + msgspec.msgpack.encode({"user_id": "u1"}), "a stored change to the held events does not decode"),
])
def test_bytes_it_cannot_read_are_an_error_that_says_why(stored, says):
    with pytest.raises(UnreadableState, match=says.replace("(", r"\(").replace("[", r"\[")):
        decode_user_state(stored, held_change_entries=lambda: ["+[1, 2]"])


def test_the_cache_writes_the_encoded_form_and_decodes_what_it_reads_back(rich_state):
    flink = OneKeyState()
    cached = CachedValueState(flink, capacity=10, encode=encode_user_state,
                              decode=lambda stored: decode_user_state(stored, lambda: entries_of(rich_state)))
    cached.update("u1", rich_state)
    assert flink.stored == encode_user_state(rich_state)
    assert cached.value("u1") is rich_state        # the live object, not decoded again
    cached.forget("u1")
    assert typed(cached.value("u1")) == typed(rich_state)
    flink.stored = pickle.loads(pickle.dumps(rich_state))  # an earlier release's state after a restore
    cached.forget("u1")
    assert typed(cached.value("u1")) == typed(rich_state)
