"""Population-level trending categories over the last hour of event time (cold-start fallback).

Counts live in fixed, epoch-aligned time buckets, like the per-user rolling windows: "the
last hour" is the buckets covering (anchor - window, anchor] where the anchor is the newest
event time seen. Memory is bounded twice: buckets older than the window are pruned, and a
bucket keeps at most ``max_categories`` categories with Space-Saving: a new category in a full
bucket replaces the one with the lowest count (ties: the name that sorts last) and inherits
that count plus one. Counts may then be overestimated by at most the evicted count, but any
category with more than 1/``max_categories`` of a bucket's events is kept, and a newcomer is
never locked out by a long tail of ties.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field, fields
from typing import Any

# Derived from ``buckets`` and rebuilt after unpickling: kept out of snapshots and state.
_DERIVED = ("_totals", "_top")


@dataclass(slots=True)
class Trending:
    window_ms: int = 3_600_000
    bucket_ms: int = 300_000
    max_categories: int = 1000
    buckets: dict[int, dict[str, int]] = field(default_factory=dict)
    anchor: int | None = None
    # The window's totals per category, and the categories in ``top`` order (longest asked for).
    # Every event is counted and then asks for the top, so both are kept up to date as counts
    # grow: a +1 moves at most one category, and re-sorting all of them per event was the
    # trainer's largest cost with thousands of categories in the window.
    _totals: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _top: list[tuple[str, int]] | None = field(default=None, init=False, repr=False, compare=False)

    def add(self, category: str, ts: int) -> None:
        self.anchor = ts if self.anchor is None else max(self.anchor, ts)
        bucket = ts // self.bucket_ms
        if bucket <= self._oldest_excluded():
            return
        if count_in(self.buckets.setdefault(bucket, {}), category, self.max_categories):
            self._count(category)
        else:
            self._top = None  # a count went down: the order is rebuilt when asked for
        old = [b for b in self.buckets if b <= self._oldest_excluded()]
        if old:
            for b in old:
                del self.buckets[b]
            self._top = None
        if self._top is None:
            self._totals = self._window_totals()

    def top(self, k: int) -> list[tuple[str, int]]:
        """The ``k`` categories with the most events in the window, ties by name."""
        if self.anchor is None:
            return []
        if self._top is None:
            self._top = sorted(self._totals.items(), key=_rank)
        return self._top[:k]

    def _count(self, category: str) -> None:
        """One more event of ``category``: it moves up the order, nothing else moves."""
        total = self._totals.get(category, 0) + 1
        self._totals[category] = total
        if self._top is not None:
            if total > 1:
                del self._top[bisect_left(self._top, _rank((category, total - 1)), key=_rank)]
            insort(self._top, (category, total), key=_rank)

    def _window_totals(self) -> dict[str, int]:
        oldest_excluded = self._oldest_excluded()
        totals: dict[str, int] = {}
        for bucket, counts in self.buckets.items():
            if bucket > oldest_excluded:
                for category, n in counts.items():
                    totals[category] = totals.get(category, 0) + n
        return totals

    def _oldest_excluded(self) -> int:
        assert self.anchor is not None
        return self.anchor // self.bucket_ms - self.window_ms // self.bucket_ms

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _DERIVED}

    def __setstate__(self, state: dict[str, Any] | tuple[None, dict[str, Any]]) -> None:
        if isinstance(state, tuple):  # pickled before the derived fields: (None, {slot: value})
            state = state[1]
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self._top = None
        self._totals = self._window_totals() if self.anchor is not None else {}


def count_in(counts: dict[str, int], key: str, max_keys: int) -> bool:
    """One more of ``key`` in a bucket of at most ``max_keys`` (Space-Saving, see the module);
    False when it took the place of another key, whose count went down."""
    if key in counts or len(counts) < max_keys:
        counts[key] = counts.get(key, 0) + 1
        return True
    evicted = max(counts, key=lambda k: (-counts[k], k))
    counts[key] = counts.pop(evicted) + 1
    return False


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
