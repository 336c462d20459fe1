"""Interests (decayed category affinity), trending categories and the cold-start fallback.

Half-life 1 s throughout, so decays are exact powers of two and the expected scores are exact.
Weights: product_view 1, click 1, add_to_cart 3, purchase 5.
"""

from __future__ import annotations

import itertools
import pickle
import random

from personalization.core.learning.interests import (
    InterestRules,
    Interests,
    add_interest,
    profile_interests,
    top_interests,
)
from personalization.core.learning.trending import Trending

RULES = InterestRules(half_life_ms=1_000, max_categories=3, top_k=2, min_events=3)


def apply(events: list[tuple[str, str, int]], rules: InterestRules = RULES) -> Interests:
    interests = Interests()
    for category, event_type, ts in events:
        interests = add_interest(interests, category, event_type, ts, rules)
    return interests


# --- interests: decay ------------------------------------------------------------------------

def test_scores_decay_by_half_per_half_life_and_are_held_at_the_newest_event_time() -> None:
    interests = apply([("a", "product_view", 0)])
    assert (interests.as_of, interests.scores) == (0, {"a": 1.0})
    interests = add_interest(interests, "b", "add_to_cart", 1_000, RULES)      # a: 1 * 1/2
    assert (interests.as_of, interests.scores) == (1_000, {"a": 0.5, "b": 3.0})
    interests = add_interest(interests, "a", "purchase", 3_000, RULES)         # two half-lives
    assert (interests.as_of, interests.scores) == (3_000, {"a": 0.125 + 5.0, "b": 0.75})


def test_an_out_of_order_event_is_added_already_decayed_and_as_of_stays() -> None:
    interests = apply([("a", "product_view", 0), ("b", "add_to_cart", 1_000), ("a", "purchase", 3_000)])
    interests = add_interest(interests, "b", "click", 2_000, RULES)            # 1 * 1/2 at 3_000
    assert (interests.as_of, interests.scores) == (3_000, {"a": 5.125, "b": 1.25})


def test_every_arrival_order_gives_the_same_scores() -> None:
    events = [("a", "product_view", 0), ("b", "add_to_cart", 1_000), ("b", "click", 2_000), ("a", "purchase", 3_000)]
    results = {tuple(sorted(apply(list(order)).scores.items())) for order in itertools.permutations(events)}
    assert results == {(("a", 5.125), ("b", 1.25))}


def test_event_types_without_weight_change_nothing() -> None:
    interests = apply([("a", "product_view", 0)])
    assert add_interest(interests, "z", "checkout", 5_000, RULES) is interests


def test_input_state_is_not_mutated() -> None:
    before = apply([("a", "product_view", 0)])
    add_interest(before, "b", "click", 1_000, RULES)
    assert (before.as_of, before.scores) == (0, {"a": 1.0})


# --- interests: eviction and top-k ---------------------------------------------------------

def test_eviction_keeps_the_top_n_dropping_lowest_score_then_the_name_sorting_last() -> None:
    rules = InterestRules(half_life_ms=1_000, max_categories=2)
    interests = apply([("b", "click", 0), ("a", "click", 0), ("c", "click", 0)], rules)
    assert interests.scores == {"a": 1.0, "b": 1.0}                  # c ties and sorts last
    interests = add_interest(interests, "c", "add_to_cart", 0, rules)
    assert interests.scores == {"c": 3.0, "a": 1.0}                  # b ties with a, sorts last
    interests = add_interest(interests, "d", "click", 1_000, rules)  # c 1.5, a 0.5, d 1
    assert interests.scores == {"c": 1.5, "d": 1.0}


def test_top_interests_highest_first_ties_by_name() -> None:
    interests = apply([("b", "click", 0), ("a", "click", 0), ("c", "add_to_cart", 0)])
    assert top_interests(interests, 2) == [("c", 3.0), ("a", 1.0)]
    assert top_interests(interests, 10) == [("c", 3.0), ("a", 1.0), ("b", 1.0)]
    assert top_interests(Interests(), 3) == []


# --- trending ------------------------------------------------------------------------------

def test_trending_counts_the_last_hour_of_event_time_in_buckets() -> None:
    trending = Trending(window_ms=3_600_000, bucket_ms=300_000)
    for category, ts in [("y", 300_000), ("y", 310_000), ("x", 600_000)]:
        trending.add(category, ts)
    assert trending.top(5) == [("y", 2), ("x", 1)]
    trending.add("z", 3_900_000)            # bucket 13: the window is buckets 2..13
    assert trending.top(5) == [("x", 1), ("z", 1)]
    assert sorted(trending.buckets) == [2, 13]
    trending.add("y", 590_000)              # bucket 1: older than the window, ignored
    assert trending.top(5) == [("x", 1), ("z", 1)]
    assert trending.anchor == 3_900_000


def test_trending_memory_is_bounded_by_buckets_and_categories_per_bucket() -> None:
    trending = Trending(window_ms=600_000, bucket_ms=60_000, max_categories=2)
    for ts in range(0, 6_000_000, 7_000):
        trending.add(f"c{ts % 13}", ts)
    assert len(trending.buckets) <= 10
    assert all(len(counts) <= 2 for counts in trending.buckets.values())


def test_space_saving_a_newcomer_replaces_the_lowest_and_inherits_its_count() -> None:
    trending = Trending(max_categories=2)
    for category in ["a", "a", "b", "c"]:
        trending.add(category, 0)
    assert trending.buckets == {0: {"a": 2, "c": 2}}                 # c took b's 1, plus its own


def test_trending_is_empty_before_any_event() -> None:
    assert Trending().top(3) == []


# --- cold start ----------------------------------------------------------------------------

def trending_now() -> Trending:
    trending = Trending()
    for category in ["t1", "t2", "t2", "t3", "t3", "t3"]:
        trending.add(category, 1_000)
    return trending


def test_user_with_fewer_than_k_events_gets_trending_categories() -> None:
    interests = apply([("a", "purchase", 0), ("b", "click", 0)])
    assert profile_interests(interests, events_seen=2, trending=trending_now(), rules=RULES) == {
        "source": "trending",
        "as_of": 1_000,
        "categories": [{"category_id": "t3", "score": 3.0}, {"category_id": "t2", "score": 2.0}],
    }


def test_user_with_k_events_gets_personal_interests() -> None:
    interests = apply([("a", "purchase", 0), ("b", "click", 0)])
    assert profile_interests(interests, events_seen=3, trending=trending_now(), rules=RULES) == {
        "source": "personal",
        "as_of": 0,
        "categories": [{"category_id": "a", "score": 5.0}, {"category_id": "b", "score": 1.0}],
    }


def test_user_with_many_events_but_no_category_falls_back_to_trending() -> None:
    assert profile_interests(Interests(), events_seen=50, trending=trending_now(), rules=RULES)["source"] == "trending"


def test_trending_top_kept_up_to_date_equals_counting_the_window_afresh() -> None:
    """The maintained order (``Trending._count``) against a recount of the window's buckets,
    over a long stream with a long tail, evictions and buckets leaving the window; and after a
    pickle round trip, which drops the derived fields and rebuilds them."""
    rng = random.Random(7)
    trending = Trending(window_ms=600_000, bucket_ms=60_000, max_categories=40)
    for i in range(20_000):
        trending.add(f"c{int(rng.paretovariate(1.2)) % 300}", i * 97 - rng.randrange(30_000))
        if i % 997 == 0:
            trending = pickle.loads(pickle.dumps(trending))
        if i % 101 == 0:
            assert trending.top(10) == _recount(trending)[:10]
    assert trending.top(1_000) == _recount(trending)


def _recount(trending: Trending) -> list[tuple[str, int]]:
    oldest_excluded = trending.anchor // trending.bucket_ms - trending.window_ms // trending.bucket_ms
    totals: dict[str, int] = {}
    for bucket, counts in trending.buckets.items():
        if bucket > oldest_excluded:
            for category, n in counts.items():
                totals[category] = totals.get(category, 0) + n
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
