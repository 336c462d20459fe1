"""Trending beyond the item's category: over all interactions, per referrer and per device class.

Each of these contexts takes a large share of all interactions, so none may be one key that every
interaction passes through (the job would funnel through one task). They are counted in
``trending_shards`` keyed parts instead, an item always in the same part (``shard_of``). Each part
keeps, per context, Space-Saving counts per bucket of event time (``trending_bucket``, as
``core.learning.trending``) and, at every bucket end, offers its top items over the complete
buckets of the window before it (a ``Partial``). The parts count disjoint items, so a context's
trending items are the union of its parts' lists (``WideLists``, counts summed: an item counted
in two parts after ``trending_shards`` changed is counted once). A fill at event time t reads the
lists of the last bucket end at or before t: complete buckets only, each counted in event-time
order once the watermark passed it, so what a fill reads does not depend on the order in which
the interactions arrived (a late interaction counts from the next bucket end on).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

from personalization.core.learning.trending import count_in
from personalization.core.recommend.config import RecoConfig

ALL = "all"                 # the context of every interaction
REFERRER_MAX_CHARS = 100    # a referrer context is cut to this: free text must not make huge keys
LIST_DEPTH_FACTOR = 4       # a part offers top_n times this many items per context


def referrer_context(referrer: str | None) -> str | None:
    """A referrer as a context: the host of a URL (``https://www.google.com/search?q=x`` ->
    ``google.com``), else the text itself (a label such as JD's ``search``), at most
    ``REFERRER_MAX_CHARS`` characters; None when there is none."""
    text = (referrer or "").strip()
    if "://" in text:
        try:
            host = urlsplit(text).hostname
        except ValueError:  # e.g. an unclosed "[" of an IPv6 host
            host = None
        text = host.removeprefix("www.") if host else text
    return text[:REFERRER_MAX_CHARS] or None


def wide_contexts(referrer: str | None, device_class: str | None) -> tuple[str, ...]:
    """The contexts an interaction counts in beyond its category, in the order a fill falls back
    on them: where the user came from, the device class (when known), then everything."""
    contexts = []
    host = referrer_context(referrer)
    if host is not None:
        contexts.append(f"referrer:{host}")
    if device_class:
        contexts.append(f"device:{device_class}")
    contexts.append(ALL)
    return tuple(contexts)


def shard_of(item: str, shards: int) -> int:
    """The part that counts ``item`` (stable across processes, unlike ``hash``)."""
    return zlib.crc32(item.encode("utf-8", "surrogatepass")) % shards


class WideInteraction(NamedTuple):
    """One interaction with ``item`` at ``ts``, counted in each of ``contexts`` by part ``shard``."""

    shard: int
    item: str
    category: str | None
    ts: int
    contexts: tuple[str, ...]


class Partial(NamedTuple):
    """Part ``shard``'s top items of ``context`` over the complete buckets of the window before
    ``at`` (a bucket end): ``(item, count, category)``, most counted first, ties by item."""

    context: str
    shard: int
    at: int
    top: tuple[tuple[str, int, str | None], ...]


@dataclass(slots=True)
class ShardTrends:
    """One part's keyed state: per context (at most ``trending_max_contexts``, the least recently
    counted forgotten first), bucket -> item -> count; the items' categories; and the next bucket
    end at which the part offers its lists (its event-time timer), None when it counts nothing."""

    contexts: OrderedDict[str, dict[int, dict[str, int]]] = field(default_factory=OrderedDict)
    categories: dict[str, str | None] = field(default_factory=dict)
    next_end: int | None = None


def release_at(message: WideInteraction, config: RecoConfig) -> int:
    """When a part counts an interaction: at the end of its bucket, once the watermark passed it."""
    return (message.ts // config.trending_bucket_ms + 1) * config.trending_bucket_ms


def advance(part: ShardTrends, shard: int, due: list[WideInteraction], at: int, config: RecoConfig) -> list[Partial]:
    """The part's timer at event time ``at``: counts the interactions released at ``at`` in
    event-time order (those before ``at`` first) and, when ``at`` is the bucket end it waits for,
    offers its lists as of ``at`` in between. ``part.next_end`` is then the next timer it needs."""
    ordered = sorted(due, key=lambda m: (m.ts, m.item))
    before = [m for m in ordered if m.ts < at]
    for message in before:
        _count(part, message, config)
    if before and part.next_end is None:
        part.next_end = release_at(before[0], config)
    offered = _offer(part, shard, at, config) if part.next_end is not None and at >= part.next_end else []
    for message in ordered[len(before):]:
        _count(part, message, config)
        if part.next_end is None:
            part.next_end = release_at(message, config)
    return offered


def _count(part: ShardTrends, message: WideInteraction, config: RecoConfig) -> None:
    bucket = message.ts // config.trending_bucket_ms
    for context in message.contexts:
        buckets = part.contexts.get(context)
        if buckets is None:
            buckets = part.contexts[context] = {}
            while len(part.contexts) > config.trending_max_contexts:
                part.contexts.popitem(last=False)
        else:
            part.contexts.move_to_end(context)
        count_in(buckets.setdefault(bucket, {}), message.item, config.trending_max_items)
    part.categories[message.item] = message.category


def _offer(part: ShardTrends, shard: int, at: int, config: RecoConfig) -> list[Partial]:
    """The lists as of bucket end ``at``; then the buckets no later list needs are dropped, and
    the next bucket end is set while any bucket is left."""
    size = config.trending_bucket_ms
    first = at // size - config.trending_window_ms // size  # the window's oldest complete bucket
    depth = config.top_n * LIST_DEPTH_FACTOR
    offered = []
    for context, buckets in part.contexts.items():
        totals: dict[str, int] = {}
        for bucket, counts in buckets.items():
            if first <= bucket < at // size:
                for item, n in counts.items():
                    totals[item] = totals.get(item, 0) + n
        if totals:
            top = sorted(totals.items(), key=lambda entry: (-entry[1], entry[0]))[:depth]
            offered.append(Partial(context, shard, at, tuple((item, n, part.categories.get(item)) for item, n in top)))
    for context in list(part.contexts):
        buckets = part.contexts[context]
        for bucket in [b for b in buckets if b <= first]:
            del buckets[bucket]
        if not buckets:
            del part.contexts[context]
    counted = {item for buckets in part.contexts.values() for counts in buckets.values() for item in counts}
    part.categories = {item: category for item, category in part.categories.items() if item in counted}
    part.next_end = at + size if part.contexts else None
    return offered


@dataclass(slots=True)
class WideLists:
    """What every trending task knows of the parts' lists: ``(context, at) -> shard -> top``."""

    bucket_ms: int
    lists: dict[tuple[str, int], dict[int, tuple[tuple[str, int, str | None], ...]]] = field(default_factory=dict)
    # (context, at) -> the parts' lists merged: every fill of a bucket reads the same
    _merged: dict[tuple[str, int], list[tuple[str, str | None]]] = field(default_factory=dict, repr=False)

    def put(self, partial: Partial) -> None:
        key = (partial.context, partial.at)
        self.lists.setdefault(key, {})[partial.shard] = partial.top
        self._merged.pop(key, None)

    def ranked(self, context: str, ts: int, k: int) -> list[tuple[str, str | None]]:
        """``context``'s ``k`` top items as of the last bucket end at or before ``ts``, with their
        categories: the parts' counts summed, ties by item."""
        key = (context, ts // self.bucket_ms * self.bucket_ms)
        merged = self._merged.get(key)
        if merged is None:
            totals: dict[str, int] = {}
            categories: dict[str, str | None] = {}
            for top in self.lists.get(key, {}).values():
                for item, n, category in top:
                    totals[item] = totals.get(item, 0) + n
                    categories.setdefault(item, category)
            merged = self._merged[key] = [(item, categories[item])
                                          for item in sorted(totals, key=lambda item: (-totals[item], item))]
        return merged[:k]

    def drop_before(self, at: int) -> list[tuple[str, int, int]]:
        """Forget the lists of bucket ends before ``at``; the ``(context, shard, at)`` forgotten."""
        old = [key for key in self.lists if key[1] < at]
        for key in old:
            self._merged.pop(key, None)
        return [(context, shard, end) for context, end in old for shard in self.lists.pop((context, end))]


def lists_of(interactions: list[WideInteraction], config: RecoConfig) -> WideLists:
    """Every list the parts offer over ``interactions``, each part driven as the job drives it (a
    timer at each bucket end that has interactions to count or lists to offer): the tests'
    plain-Python reference."""
    lists = WideLists(config.trending_bucket_ms)
    by_shard: dict[int, dict[int, list[WideInteraction]]] = {}
    for message in interactions:
        by_shard.setdefault(message.shard, {}).setdefault(release_at(message, config), []).append(message)
    for shard, releases in by_shard.items():
        part, times = ShardTrends(), sorted(releases)
        while times or part.next_end is not None:
            at = min(t for t in (times[0] if times else None, part.next_end) if t is not None)
            due = releases[times.pop(0)] if times and times[0] == at else []
            for partial in advance(part, shard, due, at, config):
                lists.put(partial)
    return lists
