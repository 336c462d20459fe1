"""UserLogic (personalization.core.user): outcomes, counters, versions, profile, timers.

Rules used throughout: gap 1 s, max session 10 s, allowed lateness 500 ms, windows of 10 s
and 60 s with 10 buckets each (1 s and 6 s buckets), top 2 categories. Expected values are
worked out by hand in the comments.
"""

from __future__ import annotations

import dataclasses
import random

from personalization.core.events import Event
from personalization.core.sessions import SessionRules, session_id
from personalization.core.user import END_OF_INPUT, Outcome, StateCaps, UserLogic, UserState

LOGIC = UserLogic(
    session_rules=SessionRules(gap_ms=1_000, max_length_ms=10_000, allowed_lateness_ms=500),
    window_sizes=(10_000, 60_000),
    window_buckets=10,
    dedup_horizon_ms=100_000,
    top_categories=2,
)
USER = "u1"


def ev(ts: int, eid: str, etype: str = "page_view", **fields) -> Event:
    return Event(event_id=eid, event_type=etype, ts=ts, user_id=USER, **fields)


def fresh() -> UserState:
    return LOGIC.new_state(USER)


def test_new_state_is_empty_with_one_rolling_counter_per_window() -> None:
    state = fresh()
    assert (state.user_id, state.version, state.first_seen, state.last_seen) == (USER, 0, None, None)
    assert [(w.size_ms, w.width_ms) for w in state.windows] == [(10_000, 1_000), (60_000, 6_000)]
    profile = LOGIC.profile(state)
    assert profile["events_total"] == 0
    assert profile["current_session"] is None
    assert profile["last_session"] is None
    assert profile["windows"] == {"10s": {}, "1m": {}}
    assert profile["windows_as_of"] == 0


# --- outcomes -------------------------------------------------------------------------------

def test_on_time_event_is_processed() -> None:
    state = fresh()
    result = LOGIC.on_event(state, ev(1_000, "a"), watermark=0)
    assert result.outcome is Outcome.PROCESSED
    assert result.lateness_ms == 0          # ahead of the watermark: not late at all
    assert result.profile_changed is True
    assert result.sessions == []
    assert result.next_timer == 1_999       # closes_at of the session [1_000]
    assert state.version == 1


def test_event_behind_the_watermark_within_lateness_is_processed_with_its_lateness() -> None:
    state = fresh()
    result = LOGIC.on_event(state, ev(100, "a"), watermark=600)   # exactly 500 ms late
    assert (result.outcome, result.lateness_ms, result.profile_changed) == (
        Outcome.PROCESSED, 500, True)
    assert state.counts == {"page_view": 1}


def test_event_beyond_allowed_lateness_is_late_and_changes_nothing() -> None:
    state = fresh()
    LOGIC.on_event(state, ev(5_000, "a"), watermark=0)
    before = LOGIC.profile(state)
    result = LOGIC.on_event(state, ev(100, "b", "purchase"), watermark=601)   # 501 ms late
    assert (result.outcome, result.lateness_ms, result.profile_changed) == (Outcome.LATE, 501, False)
    assert (result.sessions, result.next_timer) == ([], None)
    assert LOGIC.profile(state) == before
    assert state.version == 1
    assert "b" not in state.seen_event_ids
    # the late event was not remembered: the same id on time later is applied
    assert LOGIC.on_event(state, ev(700, "b", "purchase"), watermark=601).outcome is Outcome.PROCESSED
    assert state.counts == {"page_view": 1, "purchase": 1}


def test_duplicate_event_id_is_reported_and_changes_nothing() -> None:
    state = fresh()
    LOGIC.on_event(state, ev(1_000, "a", category_id="c", dwell_ms=10), watermark=0)
    before = LOGIC.profile(state)
    for duplicate in (ev(1_000, "a", category_id="c", dwell_ms=10), ev(1_500, "a", "purchase")):
        result = LOGIC.on_event(state, duplicate, watermark=0)
        assert (result.outcome, result.profile_changed, result.sessions, result.next_timer) == (
            Outcome.DUPLICATE, False, [], None)
    assert LOGIC.profile(state) == before
    assert state.version == 1


def test_duplicate_is_detected_before_lateness() -> None:
    state = fresh()
    LOGIC.on_event(state, ev(1_000, "a"), watermark=0)
    result = LOGIC.on_event(state, ev(1_000, "a"), watermark=50_000)
    assert result.outcome is Outcome.DUPLICATE
    assert result.lateness_ms == 0


def test_duplicates_within_the_dedup_horizon_are_detected_after_many_events() -> None:
    logic = UserLogic(LOGIC.session_rules, (10_000,), 10, dedup_horizon_ms=1_000, top_categories=2)
    state = logic.new_state(USER)
    for n in range(500):                      # 10 ms apart: 0 .. 4_990
        assert logic.on_event(state, ev(n * 10, f"e{n}"), watermark=0).outcome is Outcome.PROCESSED
    # every id whose event time is within 1_000 ms of the latest (4_990) is still remembered
    for n in range(400, 500):
        assert logic.on_event(state, ev(n * 10, f"e{n}"), watermark=0).outcome is Outcome.DUPLICATE
    assert state.counts == {"page_view": 500}
    assert state.version == 500


# --- counters ---------------------------------------------------------------------------------

def test_first_and_last_seen_follow_event_time_not_arrival() -> None:
    state = fresh()
    for ts, eid in ((5_000, "a"), (2_000, "b"), (9_000, "c"), (3_000, "d")):
        LOGIC.on_event(state, ev(ts, eid), watermark=0)
    assert (state.first_seen, state.last_seen) == (2_000, 9_000)


def test_dwell_is_summed_and_scroll_depth_is_the_maximum() -> None:
    state = fresh()
    for eid, dwell, scroll in (("a", 100, 0.2), ("b", None, 0.9), ("c", 0, None), ("d", 250, 0.5)):
        LOGIC.on_event(state, ev(1_000, eid, dwell_ms=dwell, scroll_depth=scroll), watermark=0)
    assert state.dwell_ms == 350
    assert state.max_scroll_depth == 0.9


def test_top_categories_by_count_then_name() -> None:
    state = fresh()
    n = 0
    for category, times in (("b", 3), ("d", 1), ("c", 5), ("a", 3)):
        for _ in range(times):
            n += 1
            LOGIC.on_event(state, ev(n, f"e{n}", category_id=category), watermark=0)
    LOGIC.on_event(state, ev(100, "nocat"), watermark=0)     # no category: not counted
    assert state.categories == {"a": 3, "b": 3, "c": 5, "d": 1}
    assert LOGIC.profile(state)["top_categories"] == [
        {"category_id": "c", "events": 5},
        {"category_id": "a", "events": 3},     # a before b on a tie
    ]
    wide = UserLogic(LOGIC.session_rules, LOGIC.window_sizes, 10, 100_000, top_categories=10)
    assert [t["category_id"] for t in wide.profile(state)["top_categories"]] == ["c", "a", "b", "d"]


# --- versions and timers ------------------------------------------------------------------------

def test_version_steps_once_per_applied_event_and_once_per_emitted_session() -> None:
    """user.py: "One version step per applied event and per session emission, never per call"."""
    state = fresh()
    LOGIC.on_event(state, ev(0, "a"), watermark=0)
    LOGIC.on_event(state, ev(3_000, "b"), watermark=0)
    LOGIC.on_event(state, ev(6_000, "c"), watermark=0)
    assert state.version == 3
    LOGIC.on_event(state, ev(6_000, "c"), watermark=0)          # duplicate
    LOGIC.on_event(state, ev(0, "z"), watermark=6_000)          # late
    assert state.version == 3
    result = LOGIC.on_timer(state, 500)                         # nothing closes before 999
    assert (result.sessions, result.profile_changed, state.version) == ([], False, 3)
    result = LOGIC.on_timer(state, 3_999)                       # closes [0] and [3_000] together
    assert [s.start for s in result.sessions] == [0, 3_000]
    assert result.profile_changed is True
    assert state.version == 5                                   # one step per emitted session
    # an event whose processing also closes a session: one step for each
    result = LOGIC.on_event(state, ev(9_000, "d"), watermark=7_000)
    assert [s.start for s in result.sessions] == [6_000]
    assert state.version == 7
    result = LOGIC.on_timer(state, END_OF_INPUT)
    assert [s.start for s in result.sessions] == [9_000]
    assert (result.next_timer, state.version) == (None, 8)


def test_version_does_not_depend_on_how_timers_batch() -> None:
    events = [ev(0, "a"), ev(3_000, "b"), ev(6_000, "c"), ev(6_500, "d")]
    one_call, every_deadline = fresh(), fresh()
    for event in events:
        LOGIC.on_event(one_call, event, watermark=0)
        LOGIC.on_event(every_deadline, event, watermark=0)
    LOGIC.on_timer(one_call, END_OF_INPUT)
    timer = LOGIC.on_timer(every_deadline, 0).next_timer
    while timer is not None:
        timer = LOGIC.on_timer(every_deadline, timer).next_timer
    LOGIC.on_timer(every_deadline, END_OF_INPUT)
    # 4 events + 3 sessions ([0], [3_000], [6_000, 6_500])
    assert one_call.version == every_deadline.version == 7


def test_profile_does_not_depend_on_how_timers_batch() -> None:
    events = [ev(0, "a"), ev(3_000, "b"), ev(6_000, "c"), ev(6_500, "d")]
    one_call, every_deadline = fresh(), fresh()
    for event in events:
        LOGIC.on_event(one_call, event, watermark=0)
        LOGIC.on_event(every_deadline, event, watermark=0)
    LOGIC.on_timer(one_call, END_OF_INPUT)
    timer = LOGIC.on_timer(every_deadline, 0).next_timer
    while timer is not None:
        timer = LOGIC.on_timer(every_deadline, timer).next_timer
    LOGIC.on_timer(every_deadline, END_OF_INPUT)
    assert LOGIC.profile(one_call) == LOGIC.profile(every_deadline)
    assert LOGIC.profile(one_call)["last_session"]["session_id"] == session_id(USER, 6_000)


def test_hand_made_stream_profile_sessions_and_timers() -> None:
    state = fresh()
    steps = [
        # event, watermark, expected next_timer
        (ev(1_000, "e1", "page_view", category_id="shoes", dwell_ms=200, scroll_depth=0.3), 0, 1_999),
        (ev(1_500, "e2", "product_view", item_id="i1", category_id="shoes", dwell_ms=300,
            scroll_depth=0.8), 0, 2_499),
        (ev(1_200, "e3", "click", category_id="hats"), 0, 2_499),
    ]
    for version, (event, watermark, timer) in enumerate(steps, start=1):
        result = LOGIC.on_event(state, event, watermark)
        assert (result.outcome, result.lateness_ms, result.sessions, result.next_timer) == (
            Outcome.PROCESSED, 0, [], timer)
        assert state.version == version

    # watermark 2_600 passed closes_at 2_499 of [1_000, 1_200, 1_500]
    result = LOGIC.on_event(state, ev(3_000, "e4", "add_to_cart", item_id="i2", category_id="hats"),
                            2_600)
    assert result.outcome is Outcome.PROCESSED
    assert [(s.status, s.revision, s.session_id, s.start, s.end, s.event_count, s.converted)
            for s in result.sessions] == [("closed", 1, session_id(USER, 1_000), 1_000, 1_500, 3, False)]
    assert result.sessions[0].counts == {"click": 1, "page_view": 1, "product_view": 1}
    # next deadlines: first session forgotten at 1_500 + 1_000 + 500 = 3_000, [3_000] closes 3_999
    assert result.next_timer == 3_000
    assert state.version == 5                      # the event and the session

    result = LOGIC.on_event(state, ev(3_100, "e5", "purchase", category_id="bags"), 2_600)
    assert (result.sessions, result.next_timer, state.version) == ([], 3_000, 6)

    result = LOGIC.on_timer(state, 3_000)          # forgets the first session, emits nothing
    assert (result.outcome, result.sessions, result.profile_changed, result.next_timer) == (
        None, [], False, 4_099)
    assert [e.ts for e in state.session_state.events] == [3_000, 3_100]
    assert state.version == 6

    result = LOGIC.on_timer(state, 4_099)
    assert [(s.status, s.start, s.end, s.event_count, s.converted) for s in result.sessions] == [
        ("closed", 3_000, 3_100, 2, True)]
    assert (result.profile_changed, result.next_timer, state.version) == (True, 4_600, 7)

    assert LOGIC.profile(state) == {
        "user_id": USER,
        "version": 7,
        "first_seen": 1_000,
        "last_seen": 3_100,
        "events_total": 5,
        "counts": {"add_to_cart": 1, "click": 1, "page_view": 1, "product_view": 1, "purchase": 1},
        "dwell_ms_total": 500,
        "max_scroll_depth": 0.8,
        "top_categories": [{"category_id": "hats", "events": 2},
                           {"category_id": "shoes", "events": 2}],
        # no device resolver in this logic (and no user agents): test_devices_* below
        "devices": {}, "browsers": {}, "operating_systems": {}, "last_device": None,
        "anonymous_ids": [],                     # none stitched in (tests/unit/test_identity.py)
        "sessions_closed": 2,
        "sessions_converted": 1,
        "current_session": None,                 # the latest session has closed
        "last_session": {"session_id": session_id(USER, 3_000), "start": 3_000, "end": 3_100,
                         "event_count": 2, "max_scroll_depth": 0.0, "dwell_ms": 0,
                         "converted": True},
        "experiments": {},                        # none configured
        "windows_as_of": 3_100,
        "windows": {
            "10s": {"add_to_cart": 1, "click": 1, "page_view": 1, "product_view": 1, "purchase": 1},
            "1m": {"add_to_cart": 1, "click": 1, "page_view": 1, "product_view": 1, "purchase": 1},
        },
        # no rules in this logic: no segments (tests/unit/test_core_user_segments.py has them)
        "segments": {}, "primary_segment": None, "scores": {}, "rules_version": None,
    }

    # 12_500: the 10 s window now holds buckets 3..12 (the events at 3_000, 3_100, 12_500)
    result = LOGIC.on_event(state, ev(12_500, "e6", "page_view"), 4_099)
    assert (result.sessions, result.next_timer, state.version) == ([], 4_600, 8)
    profile = LOGIC.profile(state)
    assert profile["windows_as_of"] == 12_500
    assert profile["windows"] == {
        "10s": {"add_to_cart": 1, "page_view": 1, "purchase": 1},
        "1m": {"add_to_cart": 1, "click": 1, "page_view": 2, "product_view": 1, "purchase": 1},
    }
    assert profile["current_session"] == {
        "session_id": session_id(USER, 12_500), "start": 12_500, "end": 12_500, "event_count": 1,
        "max_scroll_depth": 0.0, "dwell_ms": 0, "converted": False}
    assert profile["last_session"]["session_id"] == session_id(USER, 3_000)
    assert (profile["last_seen"], profile["events_total"]) == (12_500, 6)

    result = LOGIC.on_timer(state, END_OF_INPUT)
    assert [(s.status, s.start) for s in result.sessions] == [("closed", 12_500)]
    assert (result.next_timer, state.version) == (None, 9)
    profile = LOGIC.profile(state)
    assert (profile["sessions_closed"], profile["sessions_converted"], profile["current_session"]) == (
        3, 1, None)
    assert state.session_state.events == []


def test_last_session_follows_each_emission() -> None:
    state = fresh()
    LOGIC.on_event(state, ev(0, "a", "purchase"), watermark=0)
    LOGIC.on_event(state, ev(5_000, "b"), watermark=0)
    LOGIC.on_timer(state, 999)
    assert LOGIC.profile(state)["last_session"] == {
        "session_id": session_id(USER, 0), "start": 0, "end": 0, "event_count": 1,
        "max_scroll_depth": 0.0, "dwell_ms": 0, "converted": True}
    LOGIC.on_timer(state, 5_999)
    assert LOGIC.profile(state)["last_session"]["session_id"] == session_id(USER, 5_000)


def test_last_session_is_the_session_closed_at_end_of_input() -> None:
    """A bounded replay ends with END_OF_INPUT: the sessions it closes are also forgotten in
    the same call, and the profile must still show the newest of them as the last session."""
    state = fresh()
    LOGIC.on_event(state, ev(0, "a"), watermark=0)
    LOGIC.on_event(state, ev(300, "b", "purchase"), watermark=0)
    result = LOGIC.on_timer(state, END_OF_INPUT)
    assert [s.session_id for s in result.sessions] == [session_id(USER, 0)]
    profile = LOGIC.profile(state)
    assert profile["sessions_closed"] == 1
    assert profile["last_session"] == {
        "session_id": session_id(USER, 0), "start": 0, "end": 300, "event_count": 2,
        "max_scroll_depth": 0.0, "dwell_ms": 0, "converted": True}


def test_last_session_when_a_session_closes_and_is_forgotten_in_one_call() -> None:
    state = fresh()
    LOGIC.on_event(state, ev(0, "a"), watermark=0)
    # watermark 49_000 passes both close (999) and finalization (1_500) of [0] at once
    result = LOGIC.on_event(state, ev(50_000, "b"), watermark=49_000)
    assert [s.session_id for s in result.sessions] == [session_id(USER, 0)]
    profile = LOGIC.profile(state)
    assert profile["current_session"]["session_id"] == session_id(USER, 50_000)
    assert profile["last_session"] is not None
    assert profile["last_session"]["session_id"] == session_id(USER, 0)


def test_late_but_admissible_event_that_merges_sessions_reports_update_and_retraction() -> None:
    state = fresh()
    LOGIC.on_event(state, ev(0, "a"), watermark=0)
    LOGIC.on_event(state, ev(1_400, "b", "purchase"), watermark=0)
    result = LOGIC.on_timer(state, 2_399)               # closes_at 999 and 2_399
    assert [(s.status, s.start) for s in result.sessions] == [("closed", 0), ("closed", 1_400)]
    assert LOGIC.profile(state)["sessions_closed"] == 2
    # at watermark 2_399 an event at 700 is 1_699 late: beyond the allowed 500
    assert LOGIC.on_event(state, ev(700, "c"), watermark=2_399).outcome is Outcome.LATE

    # the same events, but the event at 700 arrives while the watermark is only at 1_000
    state = fresh()
    LOGIC.on_event(state, ev(0, "a"), watermark=0)
    LOGIC.on_event(state, ev(1_400, "b", "purchase"), watermark=0)
    result = LOGIC.on_timer(state, 999)
    assert [(s.status, s.start) for s in result.sessions] == [("closed", 0)]
    # 700 at watermark 1_000 is 300 ms late; it bridges [0] and [1_400]
    result = LOGIC.on_event(state, ev(700, "c"), watermark=1_000)
    assert (result.outcome, result.lateness_ms) == (Outcome.PROCESSED, 300)
    assert result.sessions == []                        # merged session [0, 700, 1_400] is open again
    assert result.next_timer == 2_399
    assert state.version == 4
    result = LOGIC.on_timer(state, 2_399)
    assert [(s.status, s.revision, s.start, s.end, s.event_count, s.converted)
            for s in result.sessions] == [("updated", 2, 0, 1_400, 3, True)]
    profile = LOGIC.profile(state)
    assert (profile["sessions_closed"], profile["sessions_converted"], profile["version"]) == (1, 1, 5)


def test_profile_does_not_depend_on_arrival_order_without_late_events() -> None:
    events = [
        ev(0, "a", "page_view", category_id="x", dwell_ms=5),
        ev(400, "b", "product_view", item_id="i", category_id="y", scroll_depth=0.4),
        ev(2_000, "c", "add_to_cart", item_id="i", category_id="y"),
        ev(2_000, "d", "click", category_id="x"),
        ev(2_999, "e", "purchase", item_id="i"),
        ev(15_000, "f", "page_view", category_id="z", scroll_depth=0.7),
        ev(15_500, "g", "click", dwell_ms=20),
        ev(70_000, "h", "page_view"),
    ]

    def run(order: list[Event], rng: random.Random) -> tuple[dict, list]:
        state = fresh()
        emitted = []
        watermark = -1
        for index, event in enumerate(order):
            result = LOGIC.on_event(state, event, watermark)
            assert result.outcome is Outcome.PROCESSED
            emitted += result.sessions
            remaining = [e.ts for e in order[index + 1:]]
            if remaining:   # the watermark stays below every event still to come
                watermark = max(watermark, min(remaining) - 1 - rng.randrange(0, 3_000))
                emitted += LOGIC.on_timer(state, watermark).sessions
        emitted += LOGIC.on_timer(state, END_OF_INPUT).sessions
        return LOGIC.profile(state), emitted

    reference = run(sorted(events, key=lambda e: e.ts), random.Random(0))
    assert [(s.start, s.end, s.event_count) for s in reference[1]] == [
        (0, 400, 2), (2_000, 2_999, 3), (15_000, 15_500, 2), (70_000, 70_000, 1)]
    # anchor 70_000: 10 s buckets 61..70; 6 s buckets 2..11 (from 12_000)
    assert reference[0]["windows"] == {"10s": {"page_view": 1}, "1m": {"click": 1, "page_view": 2}}
    assert reference[0]["version"] == 12           # 8 events + 4 sessions, whatever the order
    assert (reference[0]["current_session"], reference[0]["last_session"]) == (None, {
        "session_id": session_id(USER, 70_000), "start": 70_000, "end": 70_000, "event_count": 1,
        "max_scroll_depth": 0.0, "dwell_ms": 0, "converted": False})
    for seed in range(100):
        rng = random.Random(seed)
        assert run(rng.sample(events, len(events)), rng) == reference, seed


IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/126.0.0.0 Safari/537.36")


def test_devices_counted_per_class_browser_and_os_with_the_latest_device() -> None:
    from personalization.udfs.enrichment import enrich

    logic = UserLogic(LOGIC.session_rules, LOGIC.window_sizes, 10, 100_000, 2, device_of=enrich)
    events = [ev(1_000, "e1", user_agent=IPHONE), ev(1_200, "e2", user_agent=WINDOWS),
              ev(1_100, "e3", user_agent=IPHONE), ev(1_300, "e4"),  # no user agent: not counted
              ev(1_150, "e5", user_agent="")]
    profiles = []
    for order in (events, events[::-1], random.Random(7).sample(events, len(events))):
        state = logic.new_state(USER)
        for event in order:
            logic.on_event(state, event, 0)
        profiles.append(logic.profile(state))
    profile = profiles[0]
    assert profile["devices"] == {"desktop": 1, "mobile": 2}
    assert profile["browsers"] == {"Chrome": 1, "Mobile Safari": 2}
    assert profile["operating_systems"] == {"Windows": 1, "iOS": 2}
    assert profile["last_device"] == {"device_class": "desktop", "browser": "Chrome", "os": "Windows",
                                      "seen_at": 1_200}
    assert profiles[1] == profiles[2] == profile  # whatever the arrival order
    assert type(next(iter(state.devices))) is str  # plain strings in state, not the enum


def test_devices_off_without_a_resolver_and_duplicates_not_counted() -> None:
    state = fresh()
    LOGIC.on_event(state, ev(1_000, "e1", user_agent=IPHONE), 0)
    assert (state.devices, state.last_device) == ({}, None)
    from personalization.udfs.enrichment import enrich

    logic = UserLogic(LOGIC.session_rules, LOGIC.window_sizes, 10, 100_000, 2, device_of=enrich)
    state = logic.new_state(USER)
    logic.on_event(state, ev(1_000, "e1", user_agent=IPHONE), 0)
    logic.on_event(state, ev(1_000, "e1", user_agent=IPHONE), 0)
    assert state.devices == {"mobile": 1}


def test_state_pickled_before_devices_existed_restores_with_empty_devices() -> None:
    import pickle

    state = fresh()
    LOGIC.on_event(state, ev(1_000, "e1"), 0)
    old = state.__getstate__()
    for name in ("devices", "browsers", "oses", "last_device"):
        del old[name]
    restored = UserState.__new__(UserState)
    restored.__setstate__(old)
    assert (restored.devices, restored.browsers, restored.oses, restored.last_device) == ({}, {}, {}, None)
    assert pickle.loads(pickle.dumps(restored)).counts == {"page_view": 1}


def test_device_families_per_user_are_bounded() -> None:
    from personalization.core.user import MAX_DEVICE_KEYS
    from personalization.udfs.enrichment import Device

    logic = UserLogic(LOGIC.session_rules, LOGIC.window_sizes, 10, 100_000, 2,
                      device_of=lambda ua: Device("desktop", ua, "Linux"))
    state = logic.new_state(USER)
    for i in range(3 * MAX_DEVICE_KEYS):
        logic.on_event(state, ev(1_000 + i, f"e{i}", user_agent=f"Made-up/{i}"), 0)
    assert len(state.browsers) == MAX_DEVICE_KEYS
    assert state.browsers["Other"] == 3 * MAX_DEVICE_KEYS - (MAX_DEVICE_KEYS - 1)
    assert logic.profile(state)["browsers"]["Made-up/0"] == 1


CAPPED = dataclasses.replace(LOGIC, caps=StateCaps(seen_ids=100, categories=20))


def test_a_user_sending_more_ids_than_the_cap_keeps_the_newest_and_reports_what_it_dropped() -> None:
    state, dropped = fresh(), 0
    for i in range(1_000):   # all within the dedup horizon: only the cap forgets any
        dropped += CAPPED.on_event(state, ev(1_000 + i, f"e{i}"), watermark=0).dropped.get("seen_ids", 0)
    assert len(state.seen_event_ids) <= 125
    assert dropped == 1_000 - len(state.seen_event_ids)
    assert state.seen_floor == min(state.seen_event_ids.values())
    assert CAPPED.on_event(state, ev(1_999, "e999"), watermark=0).outcome is Outcome.DUPLICATE  # newest kept
    assert CAPPED.on_event(state, ev(1_000, "e0"), watermark=0).outcome is Outcome.PROCESSED     # oldest forgotten


def test_a_crawler_through_thousands_of_categories_keeps_the_most_counted() -> None:
    state, dropped = fresh(), 0
    for i in range(500):
        dropped += CAPPED.on_event(state, ev(1_000 + 2 * i, f"c{i}", category_id=f"cat-{i}"),
                                   watermark=0).dropped.get("categories", 0)
        CAPPED.on_event(state, ev(1_001 + 2 * i, f"f{i}", category_id="favourite"), watermark=0)
    assert len(state.categories) <= 25
    assert dropped == 501 - len(state.categories)
    assert CAPPED.profile(state)["top_categories"][0] == {"category_id": "favourite", "events": 500}


def test_ids_past_the_dedup_horizon_are_forgotten_in_one_rebuild_not_one_per_event() -> None:
    logic = dataclasses.replace(LOGIC, dedup_horizon_ms=8_000)
    state = fresh()
    for i in range(100):
        logic.on_event(state, ev(1_000 + i, f"e{i}"), watermark=0)
    logic.on_event(state, ev(10_000, "x"), watermark=9_000 + 999)   # horizon 1,999: overdue, but within slack
    assert len(state.seen_event_ids) == 101
    logic.on_event(state, ev(20_000, "y"), watermark=18_000)        # far past: one rebuild forgets them
    assert set(state.seen_event_ids) == {"x", "y"} and state.seen_floor == 10_000


def test_events_beyond_the_held_events_cap_are_counted_only_until_the_held_sessions_are_final() -> None:
    """A bot in one session (events 1 ms apart, gap 1 s): beyond 50 held events an event is
    counted (counts, windows, dedup) and its profile written, but it is not held for sessions or
    the rules; once the watermark makes the held session final, events are held again."""
    logic = dataclasses.replace(LOGIC, caps=StateCaps(session_events=50))
    state, dropped = fresh(), 0
    for i in range(200):
        result = logic.on_event(state, ev(1_000 + i, f"b{i}", "product_view", item_id=f"i{i}"), watermark=0)
        dropped += result.dropped.get("session_events", 0)
        assert result.profile_changed and result.state_changed == (i >= 50)
    assert dropped == 150 and len(state.session_state.events) == 50
    assert state.counts == {"product_view": 200} and state.version == 200
    assert logic.on_event(state, ev(1_150, "b150", "product_view"), watermark=0).outcome is Outcome.DUPLICATE
    # the session (1,000..1,049) closes at 2,048 and is final at 1,049 + 1,000 + 500
    closed = logic.on_timer(state, watermark=2_549)
    assert [(s.event_count, len(s.items)) for s in closed.sessions] == [(50, 50)]
    assert state.session_state.events == []
    assert logic.on_event(state, ev(3_000, "later"), watermark=2_549).profile_changed  # held again
    assert len(state.session_state.events) == 1


def test_events_beyond_the_cap_after_the_held_sessions_last_emission_are_written_all_the_same() -> None:
    """The held session closed and was emitted before the watermark made it final: events beyond
    the cap in that time are the last the user sends. Their profile must be written with them; no
    later step would write it (the end of input only drops the final session)."""
    logic = dataclasses.replace(LOGIC, caps=StateCaps(session_events=50))
    state = fresh()
    for i in range(50):
        logic.on_event(state, ev(1_000 + i * 10, f"b{i}", "product_view"), watermark=0)
    assert [s.status for s in logic.on_timer(state, watermark=2_500).sessions] == ["closed"]
    beyond = [logic.on_event(state, ev(2_500 + i, f"c{i}", "product_view"), watermark=2_500) for i in range(30)]
    assert all(r.profile_changed and r.dropped == {"session_events": 1} for r in beyond)
    assert LOGIC.profile(state)["events_total"] == 80
    end = logic.on_timer(state, watermark=END_OF_INPUT)
    assert (end.sessions, end.profile_changed) == ([], False)  # nothing more to write: it was written
