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

from dataclasses import dataclass, field


@dataclass(slots=True)
class Trending:
    window_ms: int = 3_600_000
    bucket_ms: int = 300_000
    max_categories: int = 1000
    buckets: dict[int, dict[str, int]] = field(default_factory=dict)
    anchor: int | None = None

    def add(self, category: str, ts: int) -> None:
        self.anchor = ts if self.anchor is None else max(self.anchor, ts)
        bucket = ts // self.bucket_ms
        if bucket <= self._oldest_excluded():
            return
        counts = self.buckets.setdefault(bucket, {})
        if category in counts or len(counts) < self.max_categories:
            counts[category] = counts.get(category, 0) + 1
        else:
            evicted = max(counts, key=lambda c: (-counts[c], c))
            counts[category] = counts.pop(evicted) + 1
        for old in [b for b in self.buckets if b <= self._oldest_excluded()]:
            del self.buckets[old]

    def top(self, k: int) -> list[tuple[str, int]]:
        """The ``k`` categories with the most events in the window, ties by name."""
        if self.anchor is None:
            return []
        oldest_excluded = self._oldest_excluded()
        totals: dict[str, int] = {}
        for bucket, counts in self.buckets.items():
            if bucket > oldest_excluded:
                for category, n in counts.items():
                    totals[category] = totals.get(category, 0) + n
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def _oldest_excluded(self) -> int:
        assert self.anchor is not None
        return self.anchor // self.bucket_ms - self.window_ms // self.bucket_ms
