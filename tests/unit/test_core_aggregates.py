"""The rules' aggregates (personalization.core.aggregates): session, lifetime and windows kept
from events given in event-time order, sessions per window, late events, what the job offers.

Rules used throughout: gap 1 s, max session 10 s; windows of 10 s and 60 s in 10 buckets
(1 s and 6 s buckets).
"""

from __future__ import annotations

import pytest

from personalization.config.settings import DEFAULT_RULES
from personalization.core import aggregates
from personalization.core.rules import Need, Requirements, RuleSet, RulesError
from personalization.core.sessions import SessionEvent, SessionRules

RULES = SessionRules(gap_ms=1_000, max_length_ms=10_000, allowed_lateness_ms=500)
ALL = Requirements(
    session=frozenset({Need("count"), Need("sum", "dwell_ms"), Need("max", "scroll_depth"),
                       Need("last", "item_id"), Need("distinct", "item_id")}),
    lifetime=frozenset({Need("count"), Need("sessions"), Need("last", "category_id")}),
    windows={10_000: frozenset({Need("count"), Need("sessions"), Need("sum", "dwell_ms"),
                                Need("max", "scroll_depth"), Need("last", "item_id")}),
             60_000: frozenset({Need("count"), Need("sessions")})},
)


def ev(ts: int, event_type: str = "page_view", item: str | None = None, category: str | None = None,
       scroll: float | None = None, dwell: int | None = None) -> SessionEvent:
    return SessionEvent(ts, f"e{ts}", event_type, item, category, scroll, dwell)


def fed(*events: SessionEvent):
    state = aggregates.new_state((10_000, 60_000), 10)
    for event in events:
        aggregates.add(state, event, RULES)
    return state


def test_session_aggregates_restart_with_each_session() -> None:
    state = fed(ev(0, "product_view", item="a", dwell=100), ev(500, "scroll", scroll=0.5),
                ev(900, "product_view", item="b", dwell=50, scroll=0.9))
    session = aggregates.inputs(state, ALL).session
    assert session.counts == {"product_view": 2, "scroll": 1}
    assert (session.sums["dwell_ms"], session.maxima["scroll_depth"]) == (150, 0.9)
    assert (session.last["item_id"], session.distinct["item_id"]) == ("b", 2)

    aggregates.add(state, ev(1_900, "click"), RULES)  # gap of 1 s: a new session starts at 0
    session = aggregates.inputs(state, ALL).session
    assert (session.counts, session.sums, session.maxima, session.distinct) == ({"click": 1}, {}, {}, {})
    assert aggregates.inputs(state, ALL).lifetime.sessions == 2


def test_a_session_is_split_at_the_maximum_length() -> None:
    state = fed(*(ev(ts) for ts in range(0, 12_000, 500)))  # never a gap; 10 s max length
    assert state.session.start == 10_000
    assert aggregates.inputs(state, ALL).lifetime.sessions == 2


def test_windows_count_events_and_sessions_with_an_event_in_the_window() -> None:
    # sessions: [0, 500], [2_000], [9_000, 9_500]; anchor 9_500
    state = fed(ev(0, dwell=10), ev(500, "click", dwell=20), ev(2_000, item="x"), ev(9_000, scroll=0.3),
                ev(9_500, "click"))
    ten = aggregates.inputs(state, ALL).windows[10_000]
    assert ten.counts == {"click": 2, "page_view": 3}   # (-500, 9_500]: buckets 0..9
    assert ten.sessions == 3
    assert (ten.sums["dwell_ms"], ten.maxima["scroll_depth"], ten.last["item_id"]) == (30, 0.3, "x")

    aggregates.add(state, ev(12_000), RULES)  # (2_000, 12_000] at 1 s buckets: buckets 3..12
    ten = aggregates.inputs(state, ALL).windows[10_000]
    assert ten.counts == {"click": 1, "page_view": 2}
    assert ten.sessions == 2  # [9_000, 9_500] and [12_000]
    assert ten.sums == {"dwell_ms": 0} and "item_id" not in ten.last
    sixty = aggregates.inputs(state, ALL).windows[60_000]
    assert (sum(sixty.counts.values()), sixty.sessions) == (6, 4)


def test_a_session_counts_in_the_bucket_of_its_latest_event() -> None:
    # one session from 500 to 10_200 (no gap of 1 s, under 10 s); at anchor 10_200 the window
    # holds buckets 1..10: the session's start is out of it, but it has events in it: it counts, once
    state = fed(*(ev(ts) for ts in range(500, 10_000, 900)), ev(10_200))
    assert aggregates.inputs(state, ALL).lifetime.sessions == 1
    assert aggregates.inputs(state, ALL).windows[10_000].sessions == 1
    assert state.windows[0].sessions == {10: 1}


def test_windows_stay_bounded() -> None:
    state = fed(*(ev(ts) for ts in range(0, 600_000, 700)))
    assert len(state.windows[0].buckets) <= 11 and len(state.windows[0].sessions) <= 11
    assert len(state.windows[1].buckets) <= 11


def test_results_in_time_order_do_not_depend_on_how_ties_were_fed() -> None:
    a = fed(ev(0), ev(100, "click", item="i"), SessionEvent(100, "z", "scroll", None, None, 0.4, None))
    b = fed(ev(0), SessionEvent(100, "z", "scroll", None, None, 0.4, None), ev(100, "click", item="i"))
    assert aggregates.inputs(a, ALL) == aggregates.inputs(b, ALL)


def test_a_late_event_updates_counts_and_joins_the_current_session_within_a_gap_of_its_start() -> None:
    state = fed(ev(5_000), ev(5_500))
    aggregates.add(state, ev(4_200, "click", dwell=7), RULES)  # 800 ms before the session start
    inputs = aggregates.inputs(state, ALL)
    assert (state.clock, state.session.start) == (5_500, 4_200)
    assert inputs.session.counts == {"click": 1, "page_view": 2}
    assert inputs.windows[10_000].counts == {"click": 1, "page_view": 2}
    aggregates.add(state, ev(1_000, "purchase"), RULES)  # an earlier session: counts only
    inputs = aggregates.inputs(state, ALL)
    assert inputs.session.counts == {"click": 1, "page_view": 2}
    assert inputs.lifetime.counts == {"click": 1, "page_view": 2, "purchase": 1}
    assert inputs.lifetime.sessions == 1  # past sessions are not re-split


def test_last_is_the_value_on_the_latest_event_having_the_field() -> None:
    state = fed(ev(0, category="c1"), ev(10, category="c2"), ev(20))
    aggregates.add(state, ev(5, category="old"), RULES)  # late: older than c2
    assert aggregates.inputs(state, ALL).lifetime.last == {"category_id": "c2"}


def test_only_the_needed_windows_are_read() -> None:
    state = fed(ev(0))
    needs = Requirements(frozenset(), frozenset(), {60_000: frozenset({Need("count")})})
    assert set(aggregates.inputs(state, needs).windows) == {60_000}


def rules_with(feature: str) -> RuleSet:
    return RuleSet(f'version: "x"\nfeatures:\n  f: {feature}\nsegments:\n  s: {{entry: f > 1}}\n', "rules/x.yaml")


def test_rules_reading_a_window_the_job_does_not_keep_are_refused_naming_the_feature() -> None:
    with pytest.raises(RulesError) as info:
        aggregates.check_provided(rules_with("{agg: count, over: 30d}"), (600_000, 86_400_000))
    assert str(info.value) == ("rules/x.yaml: feature 'f': reads a 30d window, but the job keeps only "
                               "10m, 24h (add it to time.windows.sizes)")


@pytest.mark.parametrize("feature, span", [("{agg: distinct, field: item_id, over: lifetime}", "lifetime"),
                                           ("{agg: distinct, field: item_id, over: 10m}", "a 10m window")])
def test_distinct_is_only_offered_over_a_session(feature, span) -> None:
    with pytest.raises(RulesError) as info:
        aggregates.check_provided(rules_with(feature), (600_000,))
    assert f"feature 'f': agg 'distinct' over {span} is not offered" in str(info.value)


def test_the_default_rules_are_provided_by_the_default_windows() -> None:
    from personalization.config.settings import Settings

    aggregates.check_provided(RuleSet.load(DEFAULT_RULES), Settings().time.windows.sizes)
