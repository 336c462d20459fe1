"""Baselines that need no model: popularity, trending items in context, the user's recent items.

Trending reuses the population trending counter (``core.learning.trending``, epoch-aligned
event-time buckets, Space-Saving bounded), one per context: global, per category, per referrer
and per device class, so a cold-start user is shown what is trending where they arrived.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from personalization.core.learning.trending import Trending

GLOBAL = "*"


@dataclass(slots=True)
class Popularity:
    """All-time weighted counts; the ranking is refreshed every ``refresh_every`` events (a batch job's cadence)."""

    depth: int
    refresh_every: int = 100
    counts: Counter[str] = field(default_factory=Counter)
    _ranked: list[str] = field(default_factory=list)
    _since: int = 0

    def learn(self, item: str, weight: float) -> None:
        self.counts[item] += weight  # type: ignore[assignment]  # a Counter counts floats too; typeshed says int
        self._since += 1
        if self._since >= self.refresh_every or not self._ranked:
            self._ranked = [item for item, _ in self.counts.most_common(self.depth)]
            self._since = 0

    def ranked(self) -> list[str]:
        return self._ranked


@dataclass(slots=True)
class ContextTrending:
    """Items with the most interactions in the last ``window_ms`` of event time, per context key."""

    window_ms: int
    bucket_ms: int
    max_items: int
    max_contexts: int = 10_000
    by_context: OrderedDict[str, Trending] = field(default_factory=OrderedDict)

    def learn(self, item: str, ts: int, contexts: list[str]) -> None:
        for context in (GLOBAL, *contexts):
            counter = self.by_context.get(context)
            if counter is None:
                counter = self.by_context[context] = Trending(self.window_ms, self.bucket_ms, self.max_items)
                if len(self.by_context) > self.max_contexts:
                    self.by_context.popitem(last=False)
            else:
                self.by_context.move_to_end(context)
            counter.add(item, ts)

    def ranked(self, context: str, k: int) -> list[str]:
        counter = self.by_context.get(context)
        return [item for item, _ in counter.top(k)] if counter else []


def contexts_of(category: str | None, referrer: str | None, device: str | None) -> list[str]:
    """The trending contexts an interaction counts in besides the global one."""
    keys = []
    if category:
        keys.append(f"category:{category}")
    if referrer:
        keys.append(f"referrer:{referrer}")
    if device:
        keys.append(f"device:{device}")
    return keys
