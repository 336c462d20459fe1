"""Rolling event-time counts per user, bounded in memory by fixed time buckets.

Each window of size W keeps at most ``buckets`` counters of width W / buckets, aligned to
the epoch. "In the last W" means the buckets covering (anchor - W, anchor] at bucket
resolution, where the anchor is the user's latest event time: a value that depends only on
the set of events seen, never on arrival order or the wall clock.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from personalization.core.evolvable import evolvable


@functools.cache  # a few sizes, named in every profile written
def window_name(size_ms: int) -> str:
    """``10m``, ``24h``, ``7d``: days only from two days up, as people say "24 hours"."""
    for unit, ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if size_ms % ms == 0 and (unit != "d" or size_ms >= 2 * ms):
            return f"{size_ms // ms}{unit}"
    return f"{size_ms}ms"


@evolvable
@dataclass(slots=True)
class RollingCounts:
    size_ms: int
    width_ms: int
    buckets: dict[int, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def create(cls, size_ms: int, bucket_count: int) -> RollingCounts:
        return cls(size_ms, size_ms // bucket_count)

    def add(self, ts: int, event_type: str, anchor: int) -> None:
        bucket = ts // self.width_ms
        if bucket <= self._oldest_excluded(anchor):
            return
        counts = self.buckets.setdefault(bucket, {})
        counts[event_type] = counts.get(event_type, 0) + 1
        self._prune(anchor)

    def counts(self, anchor: int) -> dict[str, int]:
        oldest_excluded = self._oldest_excluded(anchor)
        total: dict[str, int] = {}
        for bucket, counts in self.buckets.items():
            if bucket > oldest_excluded:
                for event_type, n in counts.items():
                    total[event_type] = total.get(event_type, 0) + n
        return dict(sorted(total.items()))

    def _oldest_excluded(self, anchor: int) -> int:
        return anchor // self.width_ms - self.size_ms // self.width_ms

    def _prune(self, anchor: int) -> None:
        oldest_excluded = self._oldest_excluded(anchor)
        for bucket in [b for b in self.buckets if b <= oldest_excluded]:
            del self.buckets[bucket]
