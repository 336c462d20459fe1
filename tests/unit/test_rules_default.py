"""Every rule of the shipped rules/default.yaml, entered and left on small hand-made inputs.

``step`` applies one event the way the operator does: ``on_event``, then ``evaluate`` with the
feature inputs at that event's time. The neutral inputs (2 sessions and no page views in 7 days,
nothing else) hold no segment, so each test sees only the changes of the rule it is about.
"""

from __future__ import annotations

import pytest

from personalization.config.settings import DEFAULT_RULES
from personalization.core.rules import Aggregates, FeatureInputs, Need, RuleSet, SegmentChange, SegmentState

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_700_000_000_000
RULES = RuleSet.load(DEFAULT_RULES)


def inputs(*, product_views_10m: int = 0, max_scroll: float = 0.0, dwell_ms: int = 0, purchases_30d: int = 0,
           purchases: int = 0, sessions_7d: int = 2, page_views_7d: int = 0,
           product_views_7d: int = 0) -> FeatureInputs:
    return FeatureInputs(
        session=Aggregates(sums={"dwell_ms": dwell_ms}, maxima={"scroll_depth": max_scroll}),
        lifetime=Aggregates(counts={"purchase": purchases}),
        windows={
            10 * MINUTE: Aggregates(counts={"product_view": product_views_10m}),
            7 * DAY: Aggregates(counts={"page_view": page_views_7d, "product_view": product_views_7d},
                                sessions=sessions_7d),
            30 * DAY: Aggregates(counts={"purchase": purchases_30d}),
        },
    )


def step(state: SegmentState, event_type: str, ts: int, **features) -> list[tuple]:
    changes = RULES.on_event(state, event_type, ts) + RULES.evaluate(state, inputs(**features), ts)
    return brief(changes)


def brief(changes: list[SegmentChange]) -> list[tuple]:
    return [(c.segment, c.action, c.cause.rule, dict(c.cause.features), c.event_time) for c in changes]


@pytest.fixture
def state() -> SegmentState:
    return SegmentState("u1")


def test_the_default_rules_need_these_aggregates_only() -> None:
    assert RULES.version == "default-2"
    needs = RULES.requirements
    assert needs.session == {Need("max", "scroll_depth"), Need("sum", "dwell_ms")}
    assert needs.lifetime == {Need("count")}
    assert needs.windows == {10 * MINUTE: {Need("count")}, 7 * DAY: {Need("count"), Need("sessions")},
                             30 * DAY: {Need("count")}}


def test_neutral_inputs_hold_no_segment(state) -> None:
    assert step(state, "page_view", T0) == []


def test_high_intent_enters_at_3_product_views_in_10_minutes_and_leaves_at_1(state) -> None:
    assert step(state, "product_view", T0, product_views_10m=2) == []
    assert step(state, "product_view", T0 + 1, product_views_10m=3) == [
        ("high_intent", "enter", "high_intent.entry", {"product_views_10m": 3}, T0 + 1)]
    assert step(state, "page_view", T0 + 9 * MINUTE, product_views_10m=2) == []  # hysteresis
    assert step(state, "page_view", T0 + 10 * MINUTE, product_views_10m=1) == [
        ("high_intent", "exit", "high_intent.exit", {"product_views_10m": 1}, T0 + 10 * MINUTE)]


def test_high_intent_lapses_after_30_minutes_without_events(state) -> None:
    step(state, "product_view", T0, product_views_10m=3)
    assert RULES.on_deadline(state, T0 + 30 * MINUTE - 1) == []
    assert brief(RULES.on_deadline(state, T0 + 30 * MINUTE)) == [
        ("high_intent", "exit", "high_intent_lapsed", {}, T0 + 30 * MINUTE)]


def test_engaged_reader_enters_past_80_percent_scroll_and_3_minutes_dwell_in_a_session(state) -> None:
    assert step(state, "scroll", T0, max_scroll=0.8, dwell_ms=200_000) == []  # strictly more than 80 %
    assert step(state, "scroll", T0 + 1, max_scroll=0.9, dwell_ms=180_000) == []  # strictly more than 3 min
    assert step(state, "page_view", T0 + 2, max_scroll=0.9, dwell_ms=180_001) == [
        ("engaged_reader", "enter", "engaged_reader.entry",
         {"dwell_ms_session": 180_001, "max_scroll_session": 0.9}, T0 + 2)]


def test_engaged_reader_leaves_after_a_session_of_over_a_minute_without_scrolling_past_half(state) -> None:
    step(state, "page_view", T0, max_scroll=0.9, dwell_ms=200_000)
    next_visit = T0 + DAY
    assert step(state, "page_view", next_visit, dwell_ms=0) == []  # a new session starts at 0: stays
    assert step(state, "scroll", next_visit + 1, max_scroll=0.6, dwell_ms=90_000) == []
    assert step(state, "page_view", next_visit + 2, max_scroll=0.4, dwell_ms=60_001) == [
        ("engaged_reader", "exit", "engaged_reader.exit",
         {"dwell_ms_session": 60_001, "max_scroll_session": 0.4}, next_visit + 2)]


def test_cart_abandoner_enters_24_hours_after_an_unpaid_add_to_cart_and_leaves_on_purchase(state) -> None:
    assert step(state, "add_to_cart", T0) == []
    assert state.armed["cart_abandoned"] == [T0 + DAY]
    assert RULES.on_deadline(state, T0 + DAY - 1) == []
    assert brief(RULES.on_deadline(state, T0 + DAY)) == [("cart_abandoner", "enter", "cart_abandoned", {}, T0 + DAY)]
    assert RULES.primary(state) == "cart_abandoner"
    assert step(state, "purchase", T0 + 2 * DAY, purchases=1, purchases_30d=1) == [
        ("cart_abandoner", "exit", "cart_recovered", {}, T0 + 2 * DAY)]


def test_cart_abandoner_is_cancelled_by_a_purchase_within_24_hours(state) -> None:
    step(state, "add_to_cart", T0)
    assert step(state, "purchase", T0 + DAY - 1, purchases=1, purchases_30d=1) == []
    assert RULES.next_deadline(state) == T0 + DAY - 1 + 30 * MINUTE  # only inactivity clocks are left
    assert RULES.on_deadline(state, T0 + 2 * DAY) == []
    assert "cart_abandoner" not in state.members


def test_engaged_buyer_enters_above_3_purchases_in_30_days_and_leaves_below_2(state) -> None:
    assert step(state, "page_view", T0, purchases_30d=3) == []
    assert step(state, "page_view", T0 + 1, purchases_30d=4) == [
        ("engaged_buyer", "enter", "engaged_buyer.entry", {"purchases_30d": 4}, T0 + 1)]
    assert step(state, "page_view", T0 + 2, purchases_30d=2) == []  # hysteresis
    assert step(state, "page_view", T0 + 3, purchases_30d=1) == [
        ("engaged_buyer", "exit", "engaged_buyer.exit", {"purchases_30d": 1}, T0 + 3)]


def test_engaged_buyer_lapses_after_30_days_without_events(state) -> None:
    step(state, "page_view", T0, purchases_30d=4)
    assert RULES.on_deadline(state, T0 + 30 * DAY - 1) == []
    assert brief(RULES.on_deadline(state, T0 + 30 * DAY)) == [
        ("engaged_buyer", "exit", "buyer_lapsed", {}, T0 + 30 * DAY)]


def buy_five_times(state: SegmentState) -> list[tuple]:
    """Ten purchases so far, the last five now: engagement 5 x 10 = 50."""
    for _ in range(4):
        RULES.on_event(state, "purchase", T0)
    return step(state, "purchase", T0, purchases=10, purchases_30d=5)


def test_loyal_customer_is_an_engaged_buyer_with_10_purchases_and_engagement_50(state) -> None:
    assert buy_five_times(state) == [
        ("engaged_buyer", "enter", "engaged_buyer.entry", {"purchases_30d": 5}, T0),
        ("loyal_customer", "enter", "loyal_customer.entry", {"engagement": 50.0, "purchases_lifetime": 10}, T0),
        ("engaged", "enter", "engaged.entry", {"engagement": 50.0}, T0),
    ]
    assert RULES.primary(state) == "loyal_customer"
    # a week later engagement has halved to 25 < 30: loyal_customer is left, the others stay
    assert step(state, "page_view", T0 + 7 * DAY, purchases=10, purchases_30d=5) == [
        ("loyal_customer", "exit", "loyal_customer.exit", {"engagement": 25.0}, T0 + 7 * DAY)]
    assert RULES.primary(state) == "engaged_buyer"


def test_loyal_customer_needs_its_parent_engaged_buyer(state) -> None:
    for _ in range(5):
        RULES.on_event(state, "purchase", T0)
    assert step(state, "page_view", T0, purchases=10, purchases_30d=3) == [  # engagement 50, but no parent
        ("engaged", "enter", "engaged.entry", {"engagement": 50.0}, T0)]


def test_leaving_engaged_buyer_leaves_loyal_customer(state) -> None:
    buy_five_times(state)
    assert step(state, "page_view", T0 + 1, purchases=10, purchases_30d=1) == [
        ("engaged_buyer", "exit", "engaged_buyer.exit", {"purchases_30d": 1}, T0 + 1),
        ("loyal_customer", "exit", "engaged_buyer.exit", {"purchases_30d": 1}, T0 + 1),
    ]


def test_engaged_enters_at_engagement_20_and_leaves_when_it_decays_below_10(state) -> None:
    # engagement = 1 x click + 3 x add_to_cart + 10 x purchase
    assert step(state, "purchase", T0) == []  # 10
    assert step(state, "add_to_cart", T0) == []  # 13
    assert step(state, "add_to_cart", T0) == []  # 16
    assert step(state, "add_to_cart", T0) == []  # 19
    assert step(state, "click", T0) == [("engaged", "enter", "engaged.entry", {"engagement": 20.0}, T0)]
    assert step(state, "page_view", T0 + 7 * DAY) == []  # one half-life: 10, not below 10
    assert step(state, "page_view", T0 + 8 * DAY) == [
        ("engaged", "exit", "engaged.exit", {"engagement": round(20 * 0.5 ** (8 / 7), 6)}, T0 + 8 * DAY)]


def test_engaged_is_left_after_14_days_without_events(state) -> None:
    RULES.on_event(state, "purchase", T0)
    step(state, "purchase", T0)
    assert RULES.on_deadline(state, T0 + 14 * DAY - 1) == []
    assert brief(RULES.on_deadline(state, T0 + 14 * DAY)) == [("engaged", "exit", "went_quiet", {}, T0 + 14 * DAY)]


def test_casual_browser_one_session_a_week_with_under_5_page_views_a_session(state) -> None:
    assert step(state, "page_view", T0, sessions_7d=1, page_views_7d=4) == [
        ("casual_browser", "enter", "casual_browser.entry", {"views_7d": 4, "sessions_7d": 1}, T0)]
    assert step(state, "page_view", T0 + 1, sessions_7d=2, page_views_7d=15) == []  # hysteresis
    assert step(state, "page_view", T0 + 2, sessions_7d=2, page_views_7d=16) == [  # 8 page views a session
        ("casual_browser", "exit", "casual_browser.exit", {"views_7d": 16, "sessions_7d": 2}, T0 + 2)]
    step(state, "page_view", T0 + 3, sessions_7d=1, page_views_7d=1)
    assert step(state, "page_view", T0 + 4, sessions_7d=3, page_views_7d=3) == [  # 3 sessions a week
        ("casual_browser", "exit", "casual_browser.exit", {"views_7d": 3, "sessions_7d": 3}, T0 + 4)]


def test_casual_browser_not_entered_with_5_page_views_in_the_one_session(state) -> None:
    assert step(state, "page_view", T0, sessions_7d=1, page_views_7d=5) == []


def test_casual_browser_counts_product_views_as_pages(state) -> None:
    """The replayed datasets record product views only: a product page is a page."""
    assert step(state, "product_view", T0, sessions_7d=1, page_views_7d=1, product_views_7d=3) == [
        ("casual_browser", "enter", "casual_browser.entry", {"views_7d": 4, "sessions_7d": 1}, T0)]
    assert step(state, "product_view", T0 + 1, sessions_7d=1, product_views_7d=8) == [
        ("casual_browser", "exit", "casual_browser.exit", {"views_7d": 8, "sessions_7d": 1}, T0 + 1)]
    assert step(state, "product_view", T0 + 2, sessions_7d=1, product_views_7d=5) == []  # not re-entered
