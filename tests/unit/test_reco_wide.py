"""Trending over all interactions, per referrer and per device class (core.recommend.wide), without Flink."""

from __future__ import annotations

import pickle
import random

from personalization.config.settings import load_settings
from personalization.core.events import Event
from personalization.core.recommend.stream import Fill, InOrder, ItemRow, Recommendations, Request, answer, new_trend, \
    release
from personalization.core.recommend.wide import (ALL, REFERRER_MAX_CHARS, ShardTrends, WideInteraction, advance, lists_of,
                                                 referrer_context, release_at, shard_of, wide_contexts)

MINUTE = 60_000


def config(**overrides):
    values = {"trending_bucket": "1m", "trending_window": "5m", "top_n": 3, "max_per_category": 2,
              "trending_max_items": 10_000, **overrides}
    return load_settings().with_overrides(recommendations=values).recommendations.core()


def test_a_referrer_is_its_host_or_its_label_cut_short_and_every_interaction_counts_in_all() -> None:
    assert referrer_context("https://www.google.com/search?q=shoes") == "google.com"
    assert referrer_context("http://[::1") == "http://[::1"            # not a URL that parses: the text
    assert referrer_context("search") == "search"
    assert referrer_context("  ") is None and referrer_context(None) is None
    assert len(referrer_context("x" * 5_000)) == REFERRER_MAX_CHARS
    assert wide_contexts("https://m.example.org/a", "mobile") == ("referrer:m.example.org", "device:mobile", ALL)
    assert wide_contexts(None, None) == (ALL,)


def test_an_event_carries_its_referrer_and_one_pickled_before_it_restores_without() -> None:
    event = Event.from_payload({"event_id": "e", "event_type": "product_view", "ts": 1, "user_id": "u",
                                "referrer": "https://shop.example/"})
    assert event.referrer == "https://shop.example/"
    old = Event.__new__(Event)
    old.__setstate__(["e", "product_view", 1, "u"])       # an earlier release's field values
    assert old.referrer is None and pickle.loads(pickle.dumps(event)) == event


def interactions(n: int, seed: int, shards: int) -> list[WideInteraction]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        item = f"i{int(rng.paretovariate(1.2)) % 60}"
        contexts = wide_contexts(rng.choice(["search", "home", None]), rng.choice(["mobile", "desktop", None]))
        out.append(WideInteraction(shard_of(item, shards), item, f"c{int(item[1:]) % 4}", rng.randrange(40 * MINUTE),
                                   contexts))
    return out


def brute_force(messages: list[WideInteraction], context: str, at: int, cfg) -> list[tuple[str, str]]:
    """The context's items by interactions in the complete buckets of the window before ``at``."""
    bucket = cfg.trending_bucket_ms
    counts: dict[str, int] = {}
    for m in messages:
        if context in m.contexts and at - cfg.trending_window_ms <= m.ts // bucket * bucket < at:
            counts[m.item] = counts.get(m.item, 0) + 1
    ranked = sorted(counts, key=lambda item: (-counts[item], item))[: cfg.top_n * 4]
    return [(item, f"c{int(item[1:]) % 4}") for item in ranked]


def test_the_parts_lists_merged_are_the_counts_of_the_complete_buckets_whatever_the_number_of_parts() -> None:
    cfg = config()
    for shards in (1, 3, 8):
        messages = interactions(3_000, seed=shards, shards=shards)
        lists = lists_of(messages, cfg)
        for context in ("referrer:search", "device:mobile", ALL):
            for at in range(0, 50 * MINUTE, MINUTE):
                for ts in (at, at + 1, at + MINUTE - 1):   # every time of a bucket reads its start's lists
                    assert lists.ranked(context, ts, cfg.top_n * 4) == brute_force(messages, context, at, cfg)
        assert lists.ranked(ALL, 10 * MINUTE, 5)      # not vacuous


def test_a_part_counts_in_event_time_order_whatever_order_its_messages_were_held_in() -> None:
    cfg = config(trending_max_items=3)                      # Space-Saving evicts: order would matter
    messages = [m._replace(shard=0) for m in interactions(1_000, seed=7, shards=1) if MINUTE <= m.ts < 2 * MINUTE]
    offered = []
    for order in (messages, list(reversed(messages))):
        part = ShardTrends()
        assert release_at(order[0], cfg) == 2 * MINUTE
        offered.append(advance(part, 0, order, 2 * MINUTE, cfg))   # the bucket's end: counted, then offered
        assert part.next_end == 3 * MINUTE
    assert offered[0] == offered[1] and offered[0]
    assert all(len(partial.top) <= cfg.trending_max_items for partial in offered[0])


def test_a_part_forgets_what_the_window_left_behind_and_stops_its_timers() -> None:
    cfg = config()
    part = ShardTrends()
    advance(part, 0, [WideInteraction(0, "x", "c", 30_000, (ALL,))], 30_000, cfg)
    assert part.next_end == MINUTE
    at, offers = MINUTE, []
    while part.next_end is not None:
        offers.append(advance(part, 0, [], part.next_end, cfg))
        at += MINUTE
    assert [o[0].at for o in offers] == [MINUTE * k for k in range(1, 6)]   # five bucket ends of a 5 m window
    assert not part.contexts and not part.categories


def test_a_fill_takes_the_category_then_the_referrer_the_device_and_all_never_over_the_category_limit() -> None:
    cfg = config()
    crowd = [WideInteraction(0, item, category, ts, contexts) for item, category, ts, contexts in [
        ("r1", "c9", 1_000, ("referrer:search", ALL)), ("r1", "c9", 2_000, ("referrer:search", ALL)),
        ("r2", "c9", 3_000, ("referrer:search", ALL)), ("r3", "c9", 3_500, ("referrer:search", ALL)),
        ("d1", "c8", 4_000, ("device:mobile", ALL)), ("a1", "c7", 5_000, (ALL,)), ("a1", "c7", 6_000, (ALL,)),
        ("late", "c6", MINUTE + 1, ("referrer:search", ALL))]]  # in the current bucket: not yet counted
    wide = lists_of(crowd, cfg)
    reco = Recommendations("u", 1, [{"item": "k", "source": "co-view"}], "m", "q", MINUTE + 2)
    fill = Fill("c9", reco, 2, ("q", "k"), (), ("referrer:search", "device:mobile", ALL), (("c9", 1),))
    filled = release(new_trend(cfg), [fill], cfg, wide)[0]
    # c9 holds one place already: one of r1/r2/r3 (r1, the most counted), then d1 (device), not a1
    assert filled.items == [{"item": "k", "source": "co-view"},
                            {"item": "r1", "source": "trending", "context": "referrer:search"},
                            {"item": "d1", "source": "trending", "context": "device:mobile"}]
    no_limit = config(max_per_category=0)
    assert [r["item"] for r in release(new_trend(no_limit), [fill], no_limit, wide)[0].items] == ["k", "r1", "r2"]


def test_a_cold_start_user_gets_what_trends_on_the_site_once_a_bucket_is_complete() -> None:
    cfg = config()
    job = InOrder(cfg, "granted", device_of=lambda user_agent: "mobile" if user_agent else None)
    crowd = [Event(f"e{n}", "product_view", 1_000 * n, f"u{n}", item_id=f"i{n % 3}", category_id=f"c{n % 3}",
                   user_agent="UA", referrer="https://www.search.example/?q=1") for n in range(30)]
    newcomer = Event("new", "product_view", 2 * MINUTE, "new", item_id="solo", category_id="c-new")
    answers = job.feed([*crowd, newcomer]) + job.release_all()
    items = next(a for a in answers if a.user == "new").items
    assert [r["item"] for r in items] == ["i0", "i1", "i2"]
    assert {r["context"] for r in items} == {ALL}      # the newcomer came with no referrer or user agent


def test_lists_older_than_asked_are_forgotten_with_every_part_named() -> None:
    cfg = config()
    lists = lists_of(interactions(500, seed=3, shards=3), cfg)
    before = set(lists.lists)
    dropped = lists.drop_before(10 * MINUTE)
    assert {(context, at) for context, _, at in dropped} == {key for key in before if key[1] < 10 * MINUTE}
    assert {shard for _, shard, _ in dropped} == {0, 1, 2}
    assert all(at >= 10 * MINUTE for _, at in lists.lists) and lists.lists


def test_an_answer_whose_category_is_full_is_written_at_once_others_wait_for_a_fill() -> None:
    cfg = config(top_n=5, max_per_category=2)
    row = ItemRow(neighbours={"n1": [3.0, 1, "c"], "n2": [2.0, 1, "c"], "n3": [1.0, 1, "c"]})
    full = answer(row, Request("x", "c", "u", 1, 5, (), (), (), (ALL,)), cfg)
    assert isinstance(full, Recommendations) and [r["item"] for r in full.items] == ["n1", "n2"]  # 3 places left
    other = answer(row, Request("x", "d", "u", 1, 5, (), (), (), (ALL,)), cfg)
    assert isinstance(other, Fill) and other.room == 3 and other.taken == (("c", 2),)
