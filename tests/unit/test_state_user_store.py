"""The user state in three Flink states (personalization.state.user_store): a busy user's step appends
the id it saw, and the change it made to the held events, to list states instead of rewriting them
all, an ordinary user's ids and held events stay in the value, and whatever path the state takes
(read back, ids or events forgotten, reset, erased, an earlier release's form) the states read
back as the live one."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import msgspec

from personalization.config.settings import load_settings
from personalization.core.events import Event
from personalization.core.privacy import Suppressed
from personalization.core.user import StateCaps, UserState
from personalization.wiring import user_logic
from personalization.config.rules import load_rules
from personalization.state.codec import MAX_INLINE_HELD, MAX_INLINE_IDS, MAX_INLINE_ITEMS
from personalization.state.user_store import UserStateStore
from tests.unit.test_state_codec import typed
from tests.unit.test_state_cached import OneKeyState

T = 1_511_658_000_000


class OneKeyValue(OneKeyState):
    def clear(self) -> None:
        self.stored = None


class OneKeyList:
    """Stands in for the ListState of the current key: keeps the calls that reached it."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.calls: list[str] = []

    def get(self):
        self.calls.append("get")
        return iter(list(self.entries))

    def add(self, entry: str) -> None:
        self.calls.append("add")
        self.entries.append(entry)

    def add_all(self, entries: list[str]) -> None:
        self.calls.append("add_all")
        self.entries.extend(entries)

    def update(self, entries: list[str]) -> None:
        self.calls.append("update")
        self.entries = list(entries)

    def clear(self) -> None:
        self.calls.append("clear")
        self.entries = []


class OneKeyMap:
    """Stands in for the MapState of the current key: keeps the calls that reached it."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.calls: list[str] = []

    def get(self, name: str) -> bytes | None:
        self.calls.append("get")
        return self.entries.get(name)

    def put(self, name: str, value: bytes) -> None:
        self.calls.append(f"put {name}")
        self.entries[name] = value

    def put_all(self, entries: dict) -> None:
        self.calls.append("put_all")
        self.entries.update(entries)

    def items(self):
        self.calls.append("items")
        return iter(list(self.entries.items()))

    def remove(self, name: str) -> None:
        self.calls.append(f"remove {name}")
        self.entries.pop(name, None)

    def clear(self) -> None:
        self.calls.append("clear")
        self.entries = {}


def _logic(seen_ids: int = 10_000):
    return dataclasses.replace(user_logic(load_settings()), caps=StateCaps(seen_ids=seen_ids))


def _click(n: int, user: str = "u1") -> Event:
    return Event(event_id=f"id {n} {{}}:*", event_type="click", ts=T + n * 1_000, user_id=user)


class Fakes(NamedTuple):
    """The five states of one key."""

    values: OneKeyValue
    ids: OneKeyList
    held: OneKeyList
    parts: OneKeyMap
    categories: OneKeyMap


def _store(capacity: int = 10, ttl_ms: int = 0):
    fakes = Fakes(OneKeyValue(), OneKeyList(), OneKeyList(), OneKeyMap(), OneKeyMap())
    return UserStateStore(*fakes, capacity, ttl_ms), *fakes


def _read_back(*fakes) -> UserState:
    """What a fresh store (after a restart) reads from the five states."""
    return UserStateStore(*fakes, capacity=10).value("u1")


def _evict(store, values, ids, held, parts, categories) -> None:
    """Another key's write evicts u1 from the cache; the fakes, which hold one key, hold u1's states again."""
    written = values.stored, list(ids.entries), list(held.entries), dict(parts.entries), dict(categories.entries)
    store.update("other", UserState("other"))
    values.stored, ids.entries, held.entries, parts.entries, categories.entries = written


def _steps(logic, store, state: UserState, numbers) -> UserState:
    for n in numbers:
        logic.on_event(state, _click(n), T)
        store.update("u1", state)
    return state


def _ids_in_value(values: OneKeyValue) -> dict:
    return msgspec.msgpack.decode(values.stored[1:])["seen_event_ids"]


def test_a_busy_users_steps_append_their_ids_and_the_two_states_read_back_as_the_live_state():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = _steps(logic, store, logic.new_state("u1"), range(MAX_INLINE_IDS))
    assert ids.calls == [] and len(_ids_in_value(values)) == MAX_INLINE_IDS  # an ordinary user: one value
    _steps(logic, store, state, range(MAX_INLINE_IDS, MAX_INLINE_IDS + 5))
    assert ids.calls == ["update", "add", "add", "add", "add"]  # moved to the list once, then appended
    assert len(ids.entries) == MAX_INLINE_IDS + 5 and _ids_in_value(values) == {}
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)
    assert list(_read_back(values, ids, held, parts, categories).seen_event_ids) == list(state.seen_event_ids)  # arrival order


def test_ids_forgotten_by_the_cap_rewrite_the_list_once_then_steps_append_again():
    logic, (store, values, ids, held, parts, categories) = _logic(seen_ids=80), _store()
    state = _steps(logic, store, logic.new_state("u1"), range(105))  # at the 101st id the logic forgets 21
    assert ids.calls.count("update") == 2 and ids.calls[-3:] == ["add"] * 3
    assert len(ids.entries) == len(state.seen_event_ids) == 84
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)


def test_ids_back_under_the_inline_bound_leave_the_list():
    logic, (store, values, ids, held, parts, categories) = _logic(seen_ids=1), _store()  # keeps 1 id, forgets beyond 1 + 0 of slack
    state = logic.new_state("u1")
    state.seen_event_ids = {f"old-{n}": T for n in range(MAX_INLINE_IDS + 1)}
    store.update("u1", state)
    assert len(ids.entries) == MAX_INLINE_IDS + 1
    _steps(logic, store, state, [1])
    assert ids.entries == [] and list(_ids_in_value(values)) == ["id 1 {}:*"]
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)


def test_a_user_read_back_after_eviction_appends_without_rewriting_and_stays_exact():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store(capacity=1)
    state = _steps(logic, store, logic.new_state("u1"), range(MAX_INLINE_IDS + 1))
    _evict(store, values, ids, held, parts, categories)
    ids.calls.clear()
    restored = store.value("u1")
    assert restored is not state and ids.calls == ["get"]
    _steps(logic, store, restored, [MAX_INLINE_IDS + 1])
    assert ids.calls == ["get", "add"]
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(restored)


def test_a_step_that_failed_is_forgotten_and_the_stored_state_read_back():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = _steps(logic, store, logic.new_state("u1"), range(MAX_INLINE_IDS + 1))
    logic.on_event(state, _click(1_000), T)  # changed, then the step failed: not written
    store.forget("u1")
    again = store.value("u1")
    assert len(again.seen_event_ids) == MAX_INLINE_IDS + 1 and "id 1000 {}:*" not in again.seen_event_ids
    _steps(logic, store, again, [1_001])
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(again)


def test_a_reset_state_keeps_the_ids_and_an_erasure_or_clear_deletes_them():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = _steps(logic, store, logic.new_state("u1"), range(MAX_INLINE_IDS + 1))
    fresh, _ = logic.reset(state, "user.reset")
    store.update("u1", fresh)
    assert ids.calls == ["update"] and typed(_read_back(values, ids, held, parts, categories)) == typed(fresh)  # same ids: nothing to add
    store.update("u1", Suppressed("req", T))
    assert ids.entries == [] and store.value("u1") == Suppressed("req", T)
    store.update("u1", state)
    store.clear("u1")
    assert (ids.entries, values.stored, store.value("u1")) == ([], None, None)


def test_a_busy_users_state_an_earlier_release_wrote_with_its_ids_inline_moves_them_to_the_list():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = logic.new_state("u1")
    for n in range(MAX_INLINE_IDS + 1):
        logic.on_event(state, _click(n), T)
    values.stored = b"U" + msgspec.msgpack.encode(state)  # the codec before the list state
    restored = store.value("u1")
    assert list(restored.seen_event_ids) == list(state.seen_event_ids) and ids.calls == []
    _steps(logic, store, restored, [MAX_INLINE_IDS + 1])
    assert ids.calls == ["update"] and typed(_read_back(values, ids, held, parts, categories)) == typed(restored)


HOUR = 3_600_000


def _visits(logic, store, state: UserState, starts: list[int], events: int) -> UserState:
    """``events`` clicks a second apart from each of ``starts`` (event time); the watermark stays
    at ``T``, so no session is final."""
    for start in starts:
        for n in range(events):
            click = Event(event_id=f"v {start} {n} {{}}:*", event_type="click", ts=start + n * 1_000, user_id="u1")
            logic.on_event(state, click, T)
            store.update("u1", state)
    return state


def _forget_sessions_before(logic, store, state: UserState, start: int) -> None:
    """The watermark passes every session before ``start`` and the horizon after it: they are final."""
    rules = logic.session_rules
    logic.on_timer(state, start - rules.gap_ms)  # the watermark stays before the visit at ``start``
    store.update("u1", state)


def _held_in_value(values: OneKeyValue) -> list:
    return msgspec.msgpack.decode(values.stored[1:])["session_state"]["events"]


def test_an_ordinary_users_held_events_stay_in_the_value():
    logic, (store, values, _, held, *_) = _logic(), _store()
    state = _visits(logic, store, logic.new_state("u1"), [T], MAX_INLINE_HELD)
    assert len(state.session_state.events) == MAX_INLINE_HELD == len(_held_in_value(values)) and held.calls == []


def test_a_busy_users_steps_log_the_event_they_held_and_a_forgotten_session_as_one_entry():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = _visits(logic, store, logic.new_state("u1"), [T], MAX_INLINE_HELD + 3)
    assert held.calls == ["update", "add", "add"]  # moved to the list once, then one entry per event
    assert len(held.entries) == MAX_INLINE_HELD + 3 and _held_in_value(values) == []
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)
    later = T + 10 * HOUR
    _visits(logic, store, state, [later], MAX_INLINE_HELD + 1)
    held.calls.clear()
    _forget_sessions_before(logic, store, state, later)
    assert [event.ts >= later for event in state.session_state.events] == [True] * (MAX_INLINE_HELD + 1)
    assert held.calls == ["add"] and held.entries[-1].startswith("-")  # the first visit forgotten: one entry
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)


def test_the_log_is_rewritten_as_the_events_held_once_it_is_mostly_forgotten_events():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = logic.new_state("u1")
    visits = [T + k * 10 * HOUR for k in range(8)]
    _visits(logic, store, state, visits[:1], MAX_INLINE_HELD + 1)
    for start in visits[1:]:  # the held events stay above the bound: 1 to 2 visits
        _visits(logic, store, state, [start], MAX_INLINE_HELD + 1)
        _forget_sessions_before(logic, store, state, start)
        assert len(held.entries) <= 2 * len(state.session_state.events) + MAX_INLINE_HELD
        assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)
    assert held.calls.count("update") >= 2  # rewritten since it moved there, not at every forgetting


def test_a_log_that_lost_its_oldest_entries_of_forgotten_events_reads_back_the_same_events():
    """Each list entry expires on its own (``profile.state_ttl``): the oldest go first."""
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    later = T + 10 * HOUR
    state = _visits(logic, store, logic.new_state("u1"), [T, later], MAX_INLINE_HELD + 1)
    _forget_sessions_before(logic, store, state, later)
    first_kept = next(n for n, entry in enumerate(held.entries) if f'"v {later} 0' in entry)
    log = list(held.entries)
    for lost in range(first_kept + 1):
        held.entries = log[lost:]
        assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)


def test_held_events_back_under_the_inline_bound_leave_the_list():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    later = T + 10 * HOUR
    state = _visits(logic, store, logic.new_state("u1"), [T, later], MAX_INLINE_HELD // 2 + 1)
    assert len(held.entries) == MAX_INLINE_HELD + 2  # moved at the 65th, then one more
    _forget_sessions_before(logic, store, state, later)
    assert held.entries == [] and len(_held_in_value(values)) == MAX_INLINE_HELD // 2 + 1
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)


def test_held_events_read_back_after_eviction_are_logged_without_a_rewrite():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store(capacity=1)
    state = _visits(logic, store, logic.new_state("u1"), [T], MAX_INLINE_HELD + 1)
    _evict(store, values, ids, held, parts, categories)
    held.calls.clear()
    restored = store.value("u1")
    assert restored is not state and typed(restored) == typed(state) and held.calls == ["get"]
    _visits(logic, store, restored, [T + 2 * HOUR], 1)
    assert held.calls == ["get", "add"]
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(restored)


def test_an_erasure_or_clear_deletes_the_held_events_and_a_reset_writes_the_new_states():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = _visits(logic, store, logic.new_state("u1"), [T], MAX_INLINE_HELD + 1)
    fresh, _ = logic.reset(state, "user.reset")
    store.update("u1", fresh)
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(fresh)
    _visits(logic, store, state, [T + 2 * HOUR], 1)
    store.update("u1", Suppressed("req", T))
    assert held.entries == [] and ids.entries == []
    store.update("u1", state)
    assert len(held.entries) == MAX_INLINE_HELD + 2
    store.clear("u1")
    assert (held.entries, ids.entries, values.stored) == ([], [], None)


def _crawl(logic, store, state: UserState, fakes, events: int, check_every: int) -> UserState:
    """A crawler's product views, a second apart, of new items over 100 categories, with a pause of
    ten hours after every 300 (the watermark 5 s behind, timers fired as it passes them): sessions
    of 300 events open, close and are forgotten. The states read back as the live one every
    ``check_every`` steps."""
    ts = T
    for n in range(events):
        ts += 10 * HOUR if n and n % 300 == 0 else 1_000
        view = Event(event_id=f"c {n}", event_type="product_view", ts=ts, user_id="u1", item_id=f"item {n} {{}}:*",
                     category_id=f"cat {n % 100}")
        logic.on_event(state, view, ts - 5_000)
        logic.on_timer(state, ts - 5_000)
        store.update("u1", state)
        if n % check_every == 0:
            assert typed(_read_back(*fakes)) == typed(state), n
    return state


def _logic_with_rules(held: int = 2_000):
    """The default rules: they keep the session's aggregates (``FeatureState.session``)."""
    settings = load_settings()
    return dataclasses.replace(user_logic(settings, load_rules(settings)), caps=StateCaps(session_events=held))


def test_a_crawlers_big_parts_are_written_only_at_the_steps_that_changed_them_and_read_back_exact():
    """Held events capped at 200 of each 300-event session: the rules are given the first 200."""
    logic, (store, *fakes) = _logic_with_rules(held=200), _store()
    state = _crawl(logic, store, logic.new_state("u1"), fakes, 1_000, check_every=7)
    parts = fakes[3]
    puts = {name: parts.calls.count(f"put {name}") for name in ("sessions", "session-features")}
    assert state.last_session.event_count == 200 and set(parts.entries) == {"sessions", "session-features"}
    assert 0 < puts["sessions"] < 20  # at sessions' closes and forgetting, not per step
    # Per event given to the rules once the session lists more than 64 items and categories (from
    # its 33rd event), not for the 100 events beyond the cap in each session.
    assert 0 < puts["session-features"] <= 4 * (200 - MAX_INLINE_ITEMS // 2)
    assert msgspec.msgpack.decode(fakes[0].stored[1:])["last_session"] is None  # not in the value
    assert typed(_read_back(*fakes)) == typed(state)


def test_with_a_state_ttl_the_big_parts_stay_in_the_value():
    """A map entry's TTL counts from its own write: a part not written for a while would expire first."""
    logic, (store, *fakes) = _logic_with_rules(), _store(ttl_ms=30 * 86_400_000)
    _crawl(logic, store, logic.new_state("u1"), fakes, 400, check_every=50)
    assert fakes[3].calls == [] and len(msgspec.msgpack.decode(fakes[0].stored[1:])["last_session"]["items"]) == 300


def _views(logic, store, state: UserState, numbers, categories: int) -> UserState:
    """Product views, a second apart, over ``categories`` categories; each step tells the store the
    categories it counted, as the operator does."""
    for n in numbers:
        view = Event(event_id=f"p {n}", event_type="product_view", ts=T + n * 1_000, user_id="u1",
                     item_id=f"item {n}", category_id=f"cat {n % categories} {{}}:*")
        result = logic.on_event(state, view, T)
        store.update("u1", state, result.categories_counted)
    return state


def _kinds(calls: list[str]) -> list[str]:
    return [call.split(" ")[0] for call in calls]


def test_a_busy_users_step_puts_the_one_category_it_counted_and_a_trim_rewrites_them_once():
    logic = dataclasses.replace(_logic(), caps=StateCaps(categories=80))  # trimmed to 80 beyond 100
    store, values, ids, held, parts, categories = _store()
    state = _views(logic, store, logic.new_state("u1"), range(MAX_INLINE_ITEMS), categories=1_000)
    assert categories.calls == [] and len(msgspec.msgpack.decode(values.stored[1:])["categories"]) == MAX_INLINE_ITEMS
    _views(logic, store, state, range(MAX_INLINE_ITEMS, MAX_INLINE_ITEMS + 3), categories=1_000)
    assert _kinds(categories.calls) == ["clear", "put_all", "put", "put"]  # moved to the map once, then a put a step
    assert msgspec.msgpack.decode(values.stored[1:])["categories"] == {}
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)
    categories.calls.clear()
    _views(logic, store, state, range(MAX_INLINE_ITEMS + 3, 110), categories=1_000)  # the 101st category trims
    assert categories.calls.count("put_all") == 1 and len(categories.entries) == len(state.categories) == 80 + 9
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)
    _views(logic, store, state, range(110, 140), categories=7)  # counts of categories it has raised in place
    assert categories.calls.count("put_all") == 1 and categories.entries["cat 3 {}:*"] == state.categories["cat 3 {}:*"]
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)


def test_a_step_that_cannot_say_what_it_counted_rewrites_the_categories_and_a_reset_or_erasure_clears_them():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store()
    state = _views(logic, store, logic.new_state("u1"), range(MAX_INLINE_ITEMS + 1), categories=1_000)
    state.categories["cat 0 {}:*"] += 5  # changed by some other path
    categories.calls.clear()
    store.update("u1", state)
    assert categories.calls == ["clear", "put_all"] and categories.entries["cat 0 {}:*"] == 6
    fresh, _ = logic.reset(state, "user.reset")
    store.update("u1", fresh)
    assert categories.entries == {} and typed(_read_back(values, ids, held, parts, categories)) == typed(fresh)
    store.update("u1", state)
    store.update("u1", Suppressed("req", T))
    assert categories.entries == {} and store.value("u1") == Suppressed("req", T)


def test_categories_read_back_after_eviction_take_single_puts_again():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store(capacity=1)
    state = _views(logic, store, logic.new_state("u1"), range(MAX_INLINE_ITEMS + 1), categories=1_000)
    _evict(store, values, ids, held, parts, categories)
    categories.calls.clear()
    restored = store.value("u1")
    assert restored is not state and typed(restored) == typed(state) and categories.calls == ["items"]
    _views(logic, store, restored, [MAX_INLINE_ITEMS + 1], categories=1_000)
    assert _kinds(categories.calls) == ["items", "put"]
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(restored)


def test_with_a_state_ttl_the_categories_stay_in_the_value():
    logic, (store, values, ids, held, parts, categories) = _logic(), _store(ttl_ms=30 * 86_400_000)
    state = _views(logic, store, logic.new_state("u1"), range(MAX_INLINE_ITEMS + 5), categories=1_000)
    in_value = msgspec.msgpack.decode(values.stored[1:])["categories"]
    assert categories.calls == [] and len(in_value) == MAX_INLINE_ITEMS + 5
    assert typed(_read_back(values, ids, held, parts, categories)) == typed(state)
