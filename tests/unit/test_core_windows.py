"""Rolling event-time counts (personalization.core.windows).

Semantics from the module docstring: a window of size W has ``buckets`` counters of width
W / buckets aligned to the epoch; "in the last W" is the ``buckets`` buckets ending with the
anchor's bucket (the anchor is the latest event time), so with W = 10 s and 10 buckets of
1 s, anchor 25_500 counts the buckets [16_000, 17_000) ... [25_000, 26_000).
"""

from __future__ import annotations

import random

import pytest

from personalization.core.windows import RollingCounts, window_name


@pytest.mark.parametrize(("size_ms", "name"), [
    (1_000, "1s"),
    (90_000, "90s"),
    (60_000, "1m"),
    (600_000, "10m"),
    (5_400_000, "90m"),
    (3_600_000, "1h"),
    (86_400_000, "24h"),          # one day is said "24 hours"
    (129_600_000, "36h"),
    (172_800_000, "2d"),          # days from two days up
    (604_800_000, "7d"),
    (1_500, "1500ms"),
    (250, "250ms"),
])
def test_window_name(size_ms: int, name: str) -> None:
    assert window_name(size_ms) == name


def test_create_splits_the_window_into_equal_buckets() -> None:
    rc = RollingCounts.create(600_000, 60)
    assert (rc.size_ms, rc.width_ms, rc.buckets) == (600_000, 10_000, {})
    assert RollingCounts.create(604_800_000, 60).width_ms == 10_080_000


def ten_seconds() -> RollingCounts:
    return RollingCounts.create(10_000, 10)  # 1 s buckets


def test_oldest_counted_bucket_is_buckets_minus_one_before_the_anchor_bucket() -> None:
    rc = ten_seconds()
    rc.add(16_000, "click", anchor=25_500)      # bucket 16: the oldest of 16..25
    rc.add(15_999, "click", anchor=25_500)      # bucket 15: outside, not even stored
    assert rc.counts(25_500) == {"click": 1}
    assert set(rc.buckets) == {16}


def test_anchor_bucket_counts_up_to_its_last_millisecond() -> None:
    rc = ten_seconds()
    rc.add(25_999, "page_view", anchor=25_999)
    rc.add(25_000, "page_view", anchor=25_999)
    rc.add(16_000, "page_view", anchor=25_999)
    assert rc.counts(25_999) == {"page_view": 3}
    assert set(rc.buckets) == {16, 25}


def test_a_bucket_drops_out_when_the_anchor_enters_the_next_bucket() -> None:
    rc = ten_seconds()
    rc.add(16_000, "click", anchor=16_000)
    rc.add(16_999, "click", anchor=16_999)
    rc.add(25_000, "scroll", anchor=25_000)
    assert rc.counts(25_999) == {"click": 2, "scroll": 1}
    assert rc.counts(26_000) == {"scroll": 1}            # bucket 16 is now the excluded one
    assert rc.counts(34_999) == {"scroll": 1}            # bucket 25 is the oldest of 25..34
    assert rc.counts(35_000) == {}                       # buckets 26..35


def test_add_with_a_later_anchor_prunes_the_excluded_buckets() -> None:
    rc = ten_seconds()
    for ts in (10_000, 12_500, 15_000, 19_999):
        rc.add(ts, "click", anchor=ts)
    assert set(rc.buckets) == {10, 12, 15, 19}
    rc.add(24_000, "purchase", anchor=24_000)              # keeps buckets 15..24
    assert set(rc.buckets) == {15, 19, 24}
    assert rc.counts(24_000) == {"click": 2, "purchase": 1}


def test_counts_per_type_sorted_by_type() -> None:
    rc = ten_seconds()
    for ts, kind in ((1_000, "scroll"), (1_100, "click"), (1_200, "scroll"), (1_900, "add_to_cart"),
                     (2_000, "click"), (3_000, "scroll")):
        rc.add(ts, kind, anchor=3_000)
    counts = rc.counts(3_000)
    assert counts == {"add_to_cart": 1, "click": 2, "scroll": 3}
    assert list(counts) == ["add_to_cart", "click", "scroll"]
    assert rc.buckets == {1: {"scroll": 2, "click": 1, "add_to_cart": 1}, 2: {"click": 1},
                          3: {"scroll": 1}}


def test_a_jump_far_ahead_leaves_only_the_new_bucket() -> None:
    rc = ten_seconds()
    for ts in range(0, 10_000, 100):
        rc.add(ts, "click", anchor=ts)
    rc.add(1_000_000_000, "purchase", anchor=1_000_000_000)
    assert rc.buckets == {1_000_000: {"purchase": 1}}
    assert rc.counts(1_000_000_000) == {"purchase": 1}


@pytest.mark.parametrize(("size_ms", "bucket_count"), [(10_000, 10), (600_000, 60), (7_000, 7)])
def test_memory_stays_bounded_by_the_bucket_count_over_a_long_stream(size_ms: int,
                                                                     bucket_count: int) -> None:
    rng = random.Random(size_ms)
    rc = RollingCounts.create(size_ms, bucket_count)
    anchor = 0
    most = 0
    for _ in range(20_000):
        # mostly forward, sometimes out of order (up to two windows back)
        ts = max(0, anchor + rng.randrange(-2 * size_ms, size_ms // 3))
        anchor = max(anchor, ts)
        rc.add(ts, rng.choice(("click", "scroll")), anchor)
        most = max(most, len(rc.buckets))
    assert most <= bucket_count            # the documented bound ("at most buckets counters")
    # a dense tail, one event per bucket width, fills every bucket and no more
    for _ in range(1, 3 * bucket_count):
        anchor += rc.width_ms
        rc.add(anchor, "click", anchor)
        assert len(rc.buckets) <= bucket_count
    assert len(rc.buckets) == bucket_count
    assert rc.counts(anchor) == {"click": bucket_count}


def expected_counts(events: list[tuple[int, str]], width: int, bucket_count: int) -> dict[str, int]:
    """Brute force from the docstring: count events whose bucket is one of the last
    ``bucket_count`` buckets ending with the latest event's bucket."""
    anchor_bucket = max(ts for ts, _ in events) // width
    total: dict[str, int] = {}
    for ts, kind in events:
        if anchor_bucket - bucket_count < ts // width <= anchor_bucket:
            total[kind] = total.get(kind, 0) + 1
    return dict(sorted(total.items()))


def test_counts_do_not_depend_on_arrival_order() -> None:
    for seed in range(200):
        rng = random.Random(seed)
        events = [(rng.randrange(0, 40_000), rng.choice(("click", "scroll", "purchase")))
                  for _ in range(rng.randrange(1, 80))]
        want = expected_counts(events, 1_000, 10)
        for order in (sorted(events), rng.sample(events, len(events))):
            rc = ten_seconds()
            anchor = -1
            for ts, kind in order:
                anchor = max(anchor, ts)
                rc.add(ts, kind, anchor)
            assert rc.counts(anchor) == want, seed


def test_hand_made_out_of_order_stream() -> None:
    rc = ten_seconds()
    anchor = -1
    for ts, kind in ((20_000, "click"), (5_000, "click"), (12_345, "scroll"), (10_999, "click"),
                     (11_000, "purchase"), (29_999, "scroll")):
        anchor = max(anchor, ts)
        rc.add(ts, kind, anchor)
    # anchor 29_999 -> buckets 20..29: only 20_000 and 29_999 remain
    assert rc.counts(29_999) == {"click": 1, "scroll": 1}
    assert set(rc.buckets) == {20, 29}
