"""Session-based item-to-item co-occurrence: the item-kNN of session-based recommendation.

Two items co-occur when one user touches both within ``session_gap_ms`` of event time; the pair
counts the event's weight divided by how many of the user's items lie between them (neighbours in
a session are stronger evidence than its ends). Memory is bounded three ways: each item keeps at
most ``neighbours`` neighbours (pruned to the strongest when it holds twice that), at most
``max_items`` items keep neighbour lists (the least recently touched is evicted), and counts halve
every ``half_life_ms`` of event time, so yesterday's co-views fade rather than pile up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# item -> neighbour -> (count at last_ts, last_ts)
Neighbours = dict[str, list[float]]


def decayed(count: float, last_ts: float, now: int, half_life_ms: int) -> float:
    """``count`` as of ``now``, halved every ``half_life_ms`` since ``last_ts`` (never grown by late input)."""
    factor: float = 0.5 ** (max(0, now - last_ts) / half_life_ms)
    return count * factor


@dataclass(slots=True)
class ItemKNN:
    neighbours: int
    half_life_ms: int
    max_items: int
    graph: OrderedDict[str, Neighbours] = field(default_factory=OrderedDict)

    def learn(self, item: str, recent: Sequence[tuple[str, int]], weight: float, ts: int, gap_ms: int) -> None:
        """Count ``item`` with the user's ``recent`` items (most recent first, ``(item, ts)``) in the session."""
        for distance, (other, other_ts) in enumerate(recent, start=1):
            if ts - other_ts > gap_ms:
                break
            if other != item:
                self._add(item, other, weight / distance, ts)
                self._add(other, item, weight / distance, ts)

    def scores(self, recent: Iterable[str], now: int) -> dict[str, float]:
        """Candidate -> score: each recent item's neighbours, the most recent item weighing most."""
        scores: dict[str, float] = {}
        for rank, item in enumerate(recent, start=1):
            for other, (count, last_ts) in self.graph.get(item, {}).items():
                scores[other] = scores.get(other, 0.0) + decayed(count, last_ts, now, self.half_life_ms) / rank
        return scores

    def top_neighbours(self, item: str, now: int, k: int) -> list[tuple[str, float]]:
        """An item's ``k`` strongest neighbours as of ``now`` (what a per-item Redis key would hold)."""
        found = self.graph.get(item, {})
        ranked = ((other, decayed(c, t, now, self.half_life_ms)) for other, (c, t) in found.items())
        return sorted(ranked, key=lambda pair: (-pair[1], pair[0]))[:k]

    def _add(self, item: str, other: str, amount: float, ts: int) -> None:
        found = self.graph.get(item)
        if found is None:
            found = self.graph[item] = {}
            if len(self.graph) > self.max_items:
                self.graph.popitem(last=False)
        else:
            self.graph.move_to_end(item)
        entry = found.get(other)
        if entry is None:
            found[other] = [amount, ts]
        else:
            entry[0] = decayed(entry[0], entry[1], ts, self.half_life_ms) + amount
            entry[1] = max(entry[1], ts)
        if len(found) > 2 * self.neighbours:
            kept = self.top_neighbours(item, ts, self.neighbours)
            self.graph[item] = {other: found[other] for other, _ in kept}
