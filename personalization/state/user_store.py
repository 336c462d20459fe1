"""The user operator's keyed state: one value, and a busy user's seen event ids in a list state.

A user's state is written back to Flink after every step that changed it, and the ids kept for
deduplication (up to ``profile.max_seen_ids``, 10,000 by default, plus a quarter of slack) are most
of a busy user's state: re-encoding them all made each step of a crawler cost O(its ids). Beyond
``codec.MAX_INLINE_IDS`` they are in a list state of their own, where a step appends the id it
added; the list is rewritten whole only when the logic forgot ids (``UserLogic._remember`` then
builds a new dict: once per eighth of the dedup horizon or quarter of the cap, not per event) and
when a user's ids move there. The value goes through ``CachedValueState`` (``state.codec``).
"""

from __future__ import annotations

import itertools

from personalization.core.privacy import Stored, Suppressed
from personalization.core.user import UserState
from personalization.state.cached import CachedValueState
from personalization.state.codec import (decode_user_state, encode_user_state, ids_apart, keeps_ids_apart,
                                         seen_id_entry)


class UserStateStore:
    """``values``: the ValueState of ``descriptors.user_state``; ``seen_ids``: the ListState of
    ``descriptors.user_seen_ids`` (both of the current key, as Flink scopes them)."""

    def __init__(self, values, seen_ids, capacity: int, ttl_ms: int = 0) -> None:
        self._seen_ids = seen_ids
        # key -> (the live ids dict, how many of its entries, oldest first, the list state holds)
        self._in_list: dict[object, tuple[dict[str, int], int]] = {}
        self._read_back: tuple[dict[str, int], int] | None = None  # ids the last decode read from the list
        self._cache = CachedValueState(values, capacity, ttl_ms, encode=encode_user_state, decode=self._decode,
                                       on_forget=self._forget_ids)

    def value(self, key) -> Stored | None:
        self._read_back = None
        live = self._cache.value(key)
        if self._read_back is not None:
            self._in_list[key], self._read_back = self._read_back, None
        return live

    def update(self, key, value: UserState | Suppressed) -> None:
        if isinstance(value, UserState) and keeps_ids_apart(value):
            self._write_ids(key, value.seen_event_ids)
        elif key in self._in_list or not isinstance(value, UserState):  # ids back inline, or an erasure
            self._seen_ids.clear()
            self._in_list.pop(key, None)
        self._cache.update(key, value)

    def clear(self, key) -> None:
        """Delete the key's state (the current key's)."""
        self._seen_ids.clear()
        self._cache.clear(key)

    def forget(self, key) -> None:
        """The caller changed the object without writing it: the next read must see the state."""
        self._cache.forget(key)

    def _write_ids(self, key, seen: dict[str, int]) -> None:
        in_list = self._in_list.get(key)
        if in_list is not None and in_list[0] is seen and len(seen) >= in_list[1]:
            added = len(seen) - in_list[1]
            if added == 1:
                self._seen_ids.add(seen_id_entry(*next(reversed(seen.items()))))
            elif added:
                newest_first = itertools.islice(reversed(seen.items()), added)
                self._seen_ids.add_all([seen_id_entry(*item) for item in reversed(list(newest_first))])
        else:  # another dict (ids forgotten, a reset state) or ids not in the list yet
            self._seen_ids.update([seen_id_entry(*item) for item in seen.items()])
        self._in_list[key] = (seen, len(seen))

    def _decode(self, stored) -> Stored:
        value = decode_user_state(stored, self._seen_ids.get)
        if ids_apart(stored):
            self._read_back = (value.seen_event_ids, len(value.seen_event_ids))
        return value

    def _forget_ids(self, key) -> None:
        self._in_list.pop(key, None)
