"""Synthetic signals: determinism, contract validity, order preservation and plausible shapes."""

from __future__ import annotations

import itertools
import json
import random
import statistics
from collections import Counter, defaultdict

import fastjsonschema
import pytest

from personalization.config.settings import EVENT_SCHEMA
from personalization.replay.datasets import EventDict
from personalization.replay.synthetic import (
    DEFAULT_START_MS,
    FOLLOW_UP_WINDOW_MS,
    FOLLOW_UPS,
    MIN_SESSION_GAP_MS,
    augment,
    dwell_ms,
    generate,
    scroll_depth,
    user_agent_for,
)

validate = fastjsonschema.compile(json.loads(EVENT_SCHEMA.read_text()))
HOUR_MS = 3600 * 1000


def taobao_like(n: int = 500) -> list[EventDict]:
    """A sorted stream shaped like the Taobao replay: few users, many equal timestamps."""
    rng = random.Random(0)
    types = ["product_view"] * 8 + ["add_to_cart", "favorite", "purchase"]
    ts = 1_700_000_000_000
    events = []
    for number in range(n):
        ts += rng.choice((0, 0, 1000))
        events.append(
            {
                "schema_version": 1,
                "event_id": f"tb-{number}",
                "event_type": rng.choice(types),
                "ts": ts,
                "user_id": f"tb-{rng.randrange(30)}",
                "item_id": str(rng.randrange(50)),
                "category_id": str(rng.randrange(5)),
                "source": "taobao",
            }
        )
    return events


def is_sorted(events: list[EventDict]) -> bool:
    return all(a["ts"] <= b["ts"] for a, b in itertools.pairwise(events))


def identity(event: EventDict) -> str:
    return event.get("user_id") or event["anonymous_id"]


def test_augment_keeps_sort_order_and_every_real_event() -> None:
    real = taobao_like()
    out = list(augment(real, seed=1))

    assert is_sorted(out)
    kept = [e for e in out if e["source"] != "synthetic"]
    assert len(kept) == len(real)
    for before, after in zip(real, kept, strict=True):
        assert after.items() >= before.items()
    assert len(out) > len(real) * 1.3
    assert len({e["event_id"] for e in out}) == len(out)
    for event in out:
        validate(event)


def test_augment_adds_one_device_per_user_and_missing_dwell_only() -> None:
    jd_view = {
        "schema_version": 1,
        "event_id": "jd-x-1-0",
        "event_type": "product_view",
        "ts": 1_700_000_000_500,
        "user_id": "jd-x-1",
        "dwell_ms": 42_000,
        "user_agent": "curl/8.0",
        "source": "jd",
    }
    out = list(augment([*taobao_like(), jd_view], seed=1))

    devices = defaultdict(set)
    for event in out:
        devices[identity(event)].add(event["user_agent"])
    assert all(len(agents) == 1 for agents in devices.values())
    assert all("dwell_ms" in e for e in out if e["event_type"] == "product_view")
    assert next(e for e in out if e["event_id"] == "jd-x-1-0").items() >= jd_view.items()


def test_augment_follow_ups_come_shortly_after_their_source_event() -> None:
    anonymous = {
        "schema_version": 1,
        "event_id": "anon-1",
        "event_type": "purchase",
        "ts": 1_700_000_999_000,
        "anonymous_id": "a-1",
    }
    out = list(augment([*taobao_like(), anonymous], seed=2))
    by_id = {e["event_id"]: e for e in out}

    synthetic = [e for e in out if e.get("source") == "synthetic"]
    assert {e["event_type"] for e in synthetic} == {"page_view", "click", "scroll"}
    for event in synthetic:
        parent = by_id[event["event_id"].removeprefix("syn-").rpartition(".")[0]]
        assert parent["ts"] < event["ts"] < parent["ts"] + FOLLOW_UP_WINDOW_MS
        assert identity(event) == identity(parent)
        assert event["event_type"] in dict(FOLLOW_UPS[parent["event_type"]])
    anonymous_follow_ups = [e for e in synthetic if e.get("anonymous_id") == "a-1"]
    assert anonymous_follow_ups and all("user_id" not in e for e in anonymous_follow_ups)


def test_augment_is_deterministic_per_seed() -> None:
    real = taobao_like()
    assert list(augment(real, seed=5)) == list(augment(real, seed=5))
    assert list(augment(real, seed=5)) != list(augment(real, seed=6))


def test_generate_is_deterministic_per_seed() -> None:
    assert list(generate(50, seed=7)) == list(generate(50, seed=7))
    assert list(generate(50, seed=7)) != list(generate(50, seed=8))


def test_generate_is_sorted_valid_and_uniquely_identified() -> None:
    events = list(generate(200, duration_ms=12 * HOUR_MS, seed=3, start_ms=DEFAULT_START_MS))

    assert is_sorted(events)
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["source"] for e in events} == {"synthetic"}
    assert events[0]["ts"] >= DEFAULT_START_MS
    for event in events:
        validate(event)


def test_generate_sessions_follow_the_funnel() -> None:
    events = list(generate(2000, seed=4))
    sessions: dict[str, list[EventDict]] = defaultdict(list)
    for event in events:
        sessions[event["session_id"]].append(event)

    carts = purchases = 0
    for session in sessions.values():
        types = [e["event_type"] for e in session]
        assert types[0] == "page_view"
        assert "product_view" in types
        if "purchase" in types:
            assert "add_to_cart" in types[: types.index("purchase")]
        carts += "add_to_cart" in types
        purchases += "purchase" in types
    assert 0.11 < carts / len(sessions) < 0.19
    assert 0.2 < purchases / carts < 0.4


def test_generate_separates_a_users_sessions_by_more_than_the_session_gap() -> None:
    by_user: dict[str, list[EventDict]] = defaultdict(list)
    for event in generate(300, duration_ms=7 * 24 * HOUR_MS, seed=5):
        by_user[event["user_id"]].append(event)

    multi_session_users = 0
    for events in by_user.values():
        boundaries = [(a, b) for a, b in itertools.pairwise(events) if a["session_id"] != b["session_id"]]
        multi_session_users += bool(boundaries)
        assert all(b["ts"] - a["ts"] >= MIN_SESSION_GAP_MS for a, b in boundaries)
    assert multi_session_users > 250


def test_generate_category_popularity_is_skewed() -> None:
    views = Counter(e["category_id"] for e in generate(1000, seed=6) if e["event_type"] == "product_view")
    counts = sorted(views.values(), reverse=True)
    assert counts[0] > 5 * counts[len(counts) // 2]


def test_users_mostly_keep_their_device_and_about_60_percent_are_mobile() -> None:
    users = [f"u{n}" for n in range(20_000)]
    mobile = sum("Mobile" in user_agent_for(user, seed=0) for user in users) / len(users)
    assert 0.57 < mobile < 0.63
    assert all(user_agent_for(user, seed=0) == user_agent_for(user, seed=0) for user in users[:100])

    sessions = {e["session_id"]: e for e in generate(1000, seed=7)}
    loyal = sum(e["user_agent"] == user_agent_for(e["user_id"], seed=7) for e in sessions.values()) / len(sessions)
    assert 0.85 < loyal < 0.97


def test_dwell_is_lognormal_around_30_seconds_with_a_long_tail() -> None:
    rng = random.Random(0)
    samples = sorted(dwell_ms(rng) for _ in range(20_000))
    assert 27_000 < statistics.median(samples) < 33_000
    assert samples[int(0.99 * len(samples))] > 200_000
    assert samples[0] >= 0


@pytest.mark.parametrize(("engaged", "low", "high"), [(False, 0.45, 0.55), (True, 0.72, 0.82)])
def test_scroll_depth_is_a_fraction_deeper_for_engaged_users(engaged: bool, low: float, high: float) -> None:
    rng = random.Random(0)
    depths = [scroll_depth(rng, engaged) for _ in range(10_000)]
    assert all(0.0 <= depth <= 1.0 for depth in depths)
    assert low < statistics.fmean(depths) < high
