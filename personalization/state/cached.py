"""A read-through cache of live Python objects in front of a pickled keyed ValueState.

In thread mode every ``ValueState.value()`` is a call into the JVM plus an unpickle: PyFlink's
``python.state.cache-size`` only applies to process mode. The operator is the only writer of
its keyed state, so the object it last wrote for a key is exactly what the state holds, and
reading it back from the JVM is wasted work. Writes still go to Flink state at once (they must
be in the next checkpoint); only reads are saved. After a restart the cache starts empty.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


def _as_is(value):
    return value


class CachedValueState(Generic[V]):
    """``ttl_ms`` (> 0): the state's time to live after a write (Flink ``StateTtlConfig``); a cached
    object older than that is not served, so the cache never keeps alive what Flink expired.
    ``encode`` / ``decode``: what Flink holds for a live object, and back (default: the object,
    which PyFlink pickles). ``on_forget``: called with a key whose live object the cache lets go
    (forgotten, cleared, expired or evicted), for whoever keeps something beside it."""

    def __init__(self, state, capacity: int, ttl_ms: int = 0, clock: Callable[[], float] = time.monotonic,
                 encode: Callable[[V], object] = _as_is, decode: Callable[[object], V] = _as_is,
                 on_forget: Callable[[object], None] = _as_is) -> None:
        self._state = state
        self._encode, self._decode, self._on_forget = encode, decode, on_forget
        self._clock = clock
        self._capacity = capacity
        self._ttl_s = ttl_ms / 1000
        self._written: dict[object, float] = {}  # key -> monotonic time of its last write (with a TTL only)
        # Least recently used first. Not a dict: evicting from the front of a dict leaves holes
        # that every later ``next(iter(...))`` walks over (2-6 % of a 1M-user run's Python time).
        self._live: OrderedDict[object, V] = OrderedDict()

    def value(self, key) -> V | None:
        live = self._live.get(key)
        if live is not None and self._ttl_s and self._clock() - self._written.get(key, 0.0) >= self._ttl_s:
            self.forget(key)
            live = None
        if live is None:
            stored = self._state.value()
            if stored is None:
                return None
            live = self._decode(stored)
            if self._ttl_s:  # read back from Flink: written at most a TTL ago
                self._written[key] = self._clock()
        self._remember(key, live)
        return live

    def update(self, key, value: V) -> None:
        self._state.update(self._encode(value))
        if self._ttl_s:
            self._written[key] = self._clock()
        self._remember(key, value)

    def clear(self, key) -> None:
        """Delete the key's state (the current key's: Flink state is scoped to it)."""
        self._state.clear()
        self.forget(key)

    def forget(self, key) -> None:
        """The caller changed the object without writing it: the next read must see the state."""
        self._live.pop(key, None)
        self._written.pop(key, None)
        self._on_forget(key)

    def _remember(self, key, value: V) -> None:
        self._live[key] = value
        self._live.move_to_end(key)
        if len(self._live) > self._capacity:
            evicted, _ = self._live.popitem(last=False)
            self._written.pop(evicted, None)
            self._on_forget(evicted)
