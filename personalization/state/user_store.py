"""The user operator's keyed state: one value, and a busy user's larger parts in states of their own.

A user's state is written back to Flink after every step that changed it. Two of its parts grow
with a busy user up to their caps, and re-encoding them at every step made each step of a
crawler cost O(its state):

- the event ids kept for deduplication (up to ``profile.max_seen_ids``, 10,000 by default, plus a
  quarter of slack). Beyond ``codec.MAX_INLINE_IDS`` they are in a list state of their own, where
  a step appends the id it added; the list is rewritten whole only when the logic forgot ids
  (``UserLogic._remember`` then builds a new dict: once per eighth of the dedup horizon or quarter
  of the cap, not per event) and when a user's ids move there.
- the events held for sessions (up to ``profile.max_session_events``). Beyond
  ``codec.MAX_INLINE_HELD`` their list state is a log of changes (``SessionState._changes``: an
  event held, a prefix forgotten) that a step appends to; it is rewritten as the events held when
  it grows past twice their number (plus the inline bound), so a step costs O(1) amortized.

Two more parts (``codec.BIG_PARTS``: the sessions' summaries, the open session's aggregates for the
rules) list up to ``profile.max_session_events`` items each but change seldom at a busy user's
step (at a session's close, at an event the rules are given): beyond ``codec.MAX_INLINE_ITEMS``
they are entries of a map state, written only at a step that changed them. Not with a state TTL:
an entry's TTL counts from its own write, and a part not written for a while would expire before
the value; with ``profile.state_ttl`` they stay in the value.

The categories counted (up to ``profile.max_categories`` plus a quarter) change at almost every
step (an event counts one category) and beyond ``codec.MAX_INLINE_ITEMS`` are a map state of their
own, category -> count: a step puts the counts it raised (``Result.categories_counted``); the map
is rewritten whole only when the logic replaced the dict (a cap's trim, a reset) or the caller
cannot say what the step counted. Not with a state TTL, for the reason the big parts are not.

The value goes through ``CachedValueState`` (``state.codec``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from personalization.core.privacy import Stored, Suppressed
from personalization.core.sessions import SessionState
from personalization.core.user import UserState
from personalization.state.cached import CachedValueState
from personalization.state.codec import (ALL_PARTS, BIG_PARTS, CATEGORIES_APART, HELD_APART, IDS_APART,
                                         MAX_INLINE_HELD, decode_user_state, encode_user_state, held_change_entry,
                                         parts_apart, seen_id_entry, stored_parts_apart)


class UserStateStore:
    """``values``: the ValueState of ``descriptors.user_state``; ``seen_ids`` and ``held_changes``:
    the ListStates of ``descriptors.user_seen_ids`` and ``descriptors.user_held_changes``;
    ``big_parts`` and ``categories``: the MapStates of ``descriptors.USER_BIG_PARTS`` and
    ``descriptors.USER_CATEGORIES`` (all of the current key, as Flink scopes them). ``ttl_ms``:
    ``profile.state_ttl``."""

    def __init__(self, values, seen_ids, held_changes, big_parts, categories, capacity: int,
                 ttl_ms: int = 0) -> None:
        self._seen_ids = seen_ids
        self._held_changes = held_changes
        self._big_parts = big_parts
        self._categories = categories
        not_with_ttl = CATEGORIES_APART + sum(part.flag for part in BIG_PARTS)
        self._allowed = ALL_PARTS & ~not_with_ttl if ttl_ms else ALL_PARTS
        # key -> {big part's name: its token when last written}
        self._big_part_tokens: dict[object, dict[str, object]] = {}
        # key -> (the live ids dict, how many of its entries, oldest first, the list state holds)
        self._ids_in_list: dict[object, tuple[dict[str, int], int]] = {}
        # key -> (the live session state whose changes the list state logs, how many entries it has)
        self._held_in_list: dict[object, tuple[SessionState, int]] = {}
        # key -> the live categories dict whose counts the map state holds (as of its last write)
        self._categories_in_map: dict[object, dict[str, int]] = {}
        self._reading: object = None  # the key whose value is being read (its decode tracks the lists)
        self._parts_written = 0  # the parts the value being written has apart
        self._held_entries_read = 0
        self._cache = CachedValueState(values, capacity, ttl_ms, encode=self._encode, decode=self._decode,
                                       on_forget=self._forget_lists)

    def value(self, key) -> Stored | None:
        self._reading = key
        return self._cache.value(key)

    def update(self, key, value: UserState | Suppressed, categories_counted: Iterable[str] | None = None) -> None:
        """Write ``value`` back. ``categories_counted``: the categories whose counts the step raised
        in ``value.categories`` (``Result.categories_counted``); None: not known, any may have
        changed."""
        if isinstance(value, UserState):
            parts = self._parts_written = parts_apart(value) & self._allowed
            if parts & IDS_APART:
                self._write_ids(key, value.seen_event_ids)
            elif self._ids_in_list.pop(key, None) is not None:  # ids back inline
                self._seen_ids.clear()
            if parts & HELD_APART:
                self._write_held(key, value.session_state)
            elif self._held_in_list.pop(key, None) is not None:  # held events back inline
                self._held_changes.clear()
                value.session_state._changes = None
            if parts & CATEGORIES_APART:
                self._write_categories(key, value.categories, categories_counted)
            elif self._categories_in_map.pop(key, None) is not None:  # categories back inline
                self._categories.clear()
            self._write_big_parts(key, value, parts)
        else:  # an erasure marker
            self._clear_lists(key)
        self._cache.update(key, value)

    def clear(self, key) -> None:
        """Delete the key's state (the current key's)."""
        self._clear_lists(key)
        self._cache.clear(key)

    def forget(self, key) -> None:
        """The caller changed the object without writing it: the next read must see the state."""
        self._cache.forget(key)

    def _write_ids(self, key, seen: dict[str, int]) -> None:
        in_list = self._ids_in_list.get(key)
        if in_list is not None and in_list[0] is seen and len(seen) >= in_list[1]:
            added = len(seen) - in_list[1]
            if added == 1:
                self._seen_ids.add(seen_id_entry(*next(reversed(seen.items()))))
            elif added:
                newest_first = itertools.islice(reversed(seen.items()), added)
                self._seen_ids.add_all([seen_id_entry(*item) for item in reversed(list(newest_first))])
        else:  # another dict (ids forgotten, a reset state) or ids not in the list yet
            self._seen_ids.update([seen_id_entry(*item) for item in seen.items()])
        self._ids_in_list[key] = (seen, len(seen))

    def _write_held(self, key, sessions: SessionState) -> None:
        in_list, changes = self._held_in_list.get(key), sessions._changes
        if in_list is None or in_list[0] is not sessions or changes is None:  # not logged yet, or another object
            entries = self._rewrite_held(sessions)
        elif not changes:
            return
        elif in_list[1] + len(changes) > 2 * len(sessions.events) + MAX_INLINE_HELD:  # mostly forgotten events
            entries = self._rewrite_held(sessions)
        else:
            if len(changes) == 1:
                self._held_changes.add(held_change_entry(changes[0]))
            else:
                self._held_changes.add_all([held_change_entry(change) for change in changes])
            entries = in_list[1] + len(changes)
        sessions._changes = []
        self._held_in_list[key] = (sessions, entries)

    def _write_categories(self, key, categories: dict[str, int], counted: Iterable[str] | None) -> None:
        if counted is not None and self._categories_in_map.get(key) is categories:
            for category in counted:  # most steps: one category, one put
                self._categories.put(category, categories[category])
            return
        self._categories.clear()  # another dict (a trim, a reset) or not in the map yet
        self._categories.put_all(categories)
        self._categories_in_map[key] = categories

    def _write_big_parts(self, key, value: UserState, parts: int) -> None:
        tokens = self._big_part_tokens.get(key)
        for part in BIG_PARTS:
            if parts & part.flag:
                token = part.token(value)
                if tokens is None:
                    tokens = self._big_part_tokens[key] = {}
                elif part.name in tokens and tokens[part.name] == token:
                    continue
                self._big_parts.put(part.name, part.encode(value))
                tokens[part.name] = token
            elif tokens is not None and tokens.pop(part.name, None) is not None:  # back in the value
                self._big_parts.remove(part.name)

    def _rewrite_held(self, sessions: SessionState) -> int:
        self._held_changes.update([held_change_entry(event) for event in sessions.events])
        return len(sessions.events)

    def _clear_lists(self, key) -> None:
        self._seen_ids.clear()
        self._held_changes.clear()
        self._big_parts.clear()
        self._categories.clear()
        self._forget_lists(key)

    def _encode(self, value: UserState | Suppressed) -> bytes:
        return encode_user_state(value, self._parts_written)  # as ``update`` just wrote them

    def _decode(self, stored) -> Stored:
        self._held_entries_read = 0
        value = decode_user_state(stored, self._seen_ids.get, self._read_held_entries, self._big_parts.get,
                                  self._categories.items)
        parts, key = stored_parts_apart(stored), self._reading
        if parts & IDS_APART:
            self._ids_in_list[key] = (value.seen_event_ids, len(value.seen_event_ids))
        if parts & HELD_APART:
            value.session_state._changes = []
            self._held_in_list[key] = (value.session_state, self._held_entries_read)
        if parts & CATEGORIES_APART:
            self._categories_in_map[key] = value.categories
        tokens = {part.name: part.token(value) for part in BIG_PARTS if parts & part.flag}
        if tokens:
            self._big_part_tokens[key] = tokens
        return value

    def _read_held_entries(self) -> list[str]:
        entries = list(self._held_changes.get() or ())
        self._held_entries_read = len(entries)
        return entries

    def _forget_lists(self, key) -> None:
        self._ids_in_list.pop(key, None)
        self._held_in_list.pop(key, None)
        self._categories_in_map.pop(key, None)
        self._big_part_tokens.pop(key, None)
