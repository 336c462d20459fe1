"""From ranked candidates to the top-N shown: exclusions, diversity and frequency capping.

Frequency capping needs exposure feedback: every impression of an item counts against it, a click
on it clears the count, and an item shown ``cap_impressions`` times without a click is demoted
(placed after every item that is not) until ``cap_duration_ms`` of event time has passed.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from personalization.core.evolvable import positional


@positional
@dataclass(slots=True)
class Exposure:
    """One user's impressions without a click, per item, and the items demoted until when: at most
    ``max_items`` of each, the least recently shown forgotten first (a crawler shown thousands of
    items costs the same as anyone)."""

    cap_impressions: int
    cap_duration_ms: int
    max_items: int = 200
    shown: dict[str, int] = field(default_factory=dict)
    demoted_until: dict[str, int] = field(default_factory=dict)

    def impression(self, items: Iterable[str], ts: int) -> None:
        for item in items:
            count = self.shown.pop(item, 0) + 1
            if count >= self.cap_impressions:
                self.demoted_until.pop(item, None)
                self.demoted_until[item] = ts + self.cap_duration_ms
            else:
                self.shown[item] = count
        _keep_newest(self.shown, self.max_items)
        _keep_newest(self.demoted_until, self.max_items)

    def click(self, item: str) -> None:
        self.shown.pop(item, None)
        self.demoted_until.pop(item, None)

    def demoted(self, item: str, now: int) -> bool:
        until = self.demoted_until.get(item)
        if until is not None and until <= now:
            del self.demoted_until[item]
            return False
        return until is not None

    def demoted_at(self, now: int) -> tuple[str, ...]:
        """The items demoted as of event time ``now`` (nothing forgotten: events may come out of order)."""
        return tuple(item for item, until in self.demoted_until.items() if until > now)


def _keep_newest(entries: dict[str, int], limit: int) -> None:
    while len(entries) > limit:
        del entries[next(iter(entries))]


def select(ranked: Iterable[str], n: int, *, exclude: Container[str], category_of: Callable[[str], str | None],
           max_per_category: int, demoted: Callable[[str], bool] = lambda item: False,
           taken: Mapping[str | None, int] | None = None) -> list[str]:
    """The first ``n`` of ``ranked`` not excluded, at most ``max_per_category`` per category (0 = no limit,
    ``taken``: items per category already chosen elsewhere); demoted items only fill the places left after
    every other candidate, under the same limit."""
    chosen: list[str] = []
    later: list[str] = []
    per_category: dict[str | None, int] = {**(taken or {})}
    seen: set[str] = set()

    def take(item: str) -> None:
        category = category_of(item)
        if max_per_category and category is not None and per_category.get(category, 0) >= max_per_category:
            return
        per_category[category] = per_category.get(category, 0) + 1
        chosen.append(item)

    for item in ranked:
        if item in seen or item in exclude:
            continue
        seen.add(item)
        if demoted(item):
            later.append(item)
            continue
        take(item)
        if len(chosen) == n:
            return chosen
    for item in later:
        take(item)
        if len(chosen) == n:
            break
    return chosen
