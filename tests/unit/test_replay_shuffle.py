"""bounded_shuffle: a seeded reordering that never overtakes by ``max_displacement_ms`` or more."""

from __future__ import annotations

import itertools
import random

import pytest

from personalization.replay.datasets import EventDict
from personalization.replay.shuffle import bounded_shuffle


def stream(rng: random.Random, n: int, *, sorted_input: bool) -> list[EventDict]:
    """Events 0-100 ms apart, with many equal timestamps."""
    ts = 1_700_000_000_000
    events = []
    for number in range(n):
        ts += rng.choice((0, 0, rng.randrange(100)))
        events.append({"event_id": f"e{number}", "ts": ts})
    if not sorted_input:
        rng.shuffle(events)
    return events


def max_overtake_ms(arrival: list[EventDict]) -> int:
    """Largest ``x.ts - e.ts`` over pairs where ``x`` arrives before ``e``."""
    worst, latest = 0, float("-inf")
    for event in arrival:
        worst = max(worst, latest - event["ts"])
        latest = max(latest, event["ts"])
    return worst


@pytest.mark.parametrize("sorted_input", [True, False])
def test_displacement_stays_strictly_below_the_bound_for_many_seeds(sorted_input: bool) -> None:
    for seed in range(300):
        rng = random.Random(seed)
        events = stream(rng, rng.randrange(1, 300), sorted_input=sorted_input)
        bound = rng.randrange(1, 3000)

        arrival = bounded_shuffle(events, bound, seed)

        assert max_overtake_ms(arrival) < bound, (seed, bound)
        assert sorted(map(id, arrival)) == sorted(map(id, events)), seed


def test_it_actually_reorders_events_beyond_equal_timestamps() -> None:
    for seed in range(50):
        events = stream(random.Random(seed), 200, sorted_input=True)
        arrival = bounded_shuffle(events, 500, seed)
        assert any(a["ts"] > b["ts"] for a, b in itertools.pairwise(arrival)), seed


def test_no_event_is_late_for_a_watermark_with_at_least_that_out_of_orderness() -> None:
    """Flink's bounded out-of-orderness watermark is ``max_ts - bound - 1``; late means ``ts <= watermark``."""
    bound = 2000
    arrival = bounded_shuffle(stream(random.Random(1), 5000, sorted_input=True), bound, seed=1)
    watermark = -1
    for event in arrival:
        assert event["ts"] > watermark
        watermark = max(watermark, event["ts"] - bound - 1)


def test_same_seed_same_order_other_seed_other_order() -> None:
    events = stream(random.Random(0), 500, sorted_input=True)
    assert bounded_shuffle(events, 1000, seed=3) == bounded_shuffle(events, 1000, seed=3)
    assert bounded_shuffle(events, 1000, seed=3) != bounded_shuffle(events, 1000, seed=4)


def test_a_one_millisecond_bound_only_permutes_equal_timestamps() -> None:
    events = stream(random.Random(0), 500, sorted_input=False)
    arrival = bounded_shuffle(events, 1, seed=0)
    assert [e["ts"] for e in arrival] == sorted(e["ts"] for e in events)


def test_a_bound_below_one_millisecond_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_displacement_ms must be >= 1"):
        bounded_shuffle([], 0, seed=0)
