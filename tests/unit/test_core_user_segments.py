"""Segments in UserLogic (personalization.core.user) with the shipped rules/default.yaml: the rules
see each user's events in event-time order as the watermark passes them, deadlines fire on the
watermark, versions step per rules step, and the end of input fires deadlines only up to the
final watermark.

``Driver`` does what the Flink operator does: it calls ``on_event`` with the current watermark,
keeps the one pending timer per user, and fires it when the watermark reaches it.
"""

from __future__ import annotations

import random

import pytest

from personalization.config.settings import DEFAULT_RULES
from personalization.core.events import Event
from personalization.core.rules import RuleSet, RulesError
from personalization.core.sessions import SessionRules
from personalization.core.user import END_OF_INPUT, Outcome, UserLogic

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T = 1_700_000_000_000
RULES = RuleSet.load(DEFAULT_RULES)
LOGIC = UserLogic(SessionRules(30 * MIN, 4 * HOUR, HOUR), (10 * MIN, HOUR, DAY, 7 * DAY, 30 * DAY), 60,
                  dedup_horizon_ms=DAY, top_categories=3).with_rules(RULES)


class Driver:
    def __init__(self, logic: UserLogic = LOGIC, user: str = "u") -> None:
        self.logic = logic
        self.state = logic.new_state(user)
        self.timer: int | None = None
        self.watermark = -(2**63)
        self.changes: list[dict] = []

    def event(self, ts: int, event_type: str = "page_view", eid: str | None = None, **fields) -> None:
        event = Event(eid or f"{event_type}-{ts}", event_type, ts, self.state.user_id, **fields)
        self._take(self.logic.on_event(self.state, event, self.watermark))

    def advance(self, watermark: int, final_watermark: int | None = None) -> None:
        self.watermark = watermark
        while self.timer is not None and self.timer <= watermark:
            self.timer = None
            self._take(self.logic.on_timer(self.state, watermark, final_watermark))

    def end(self, final_watermark: int | None) -> None:
        self.timer = min(self.timer or END_OF_INPUT, END_OF_INPUT)  # Flink fires every timer at the end
        self.advance(END_OF_INPUT, final_watermark)

    def _take(self, result) -> None:
        self.changes += [change.as_record() for change in result.changes]
        if result.next_timer is not None:
            self.timer = result.next_timer if self.timer is None else min(self.timer, result.next_timer)

    def brief(self) -> list[tuple]:
        return [(c["segment"], c["action"], c["cause"]["rule"], c["event_time"]) for c in self.changes]

    @property
    def profile(self) -> dict:
        return self.logic.profile(self.state)


def test_the_rules_see_an_event_once_the_watermark_passes_it() -> None:
    user = Driver()
    user.event(T)
    assert user.changes == [] and user.timer == T  # the release of the event is the first timer
    user.advance(T - 1)
    assert user.changes == []
    user.advance(T)
    assert user.changes == [{
        "user_id": "u", "segment": "casual_browser", "action": "enter",
        "cause": {"rule": "casual_browser.entry", "features": {"views_7d": 1, "sessions_7d": 1}},
        "event_time": T, "rules_version": "default-2", "seq": 1,
    }]
    assert user.state.version == 2  # the event, then the rules step
    assert user.profile["segments"] == {"casual_browser": T}
    assert user.profile["primary_segment"] == "casual_browser"
    assert (user.profile["scores"], user.profile["rules_version"]) == ({"engagement": 0.0}, "default-2")


def test_high_intent_enters_at_the_third_product_view_and_lapses_after_30_minutes() -> None:
    user = Driver()
    for i in range(3):
        user.event(T + i * MIN, "product_view")
    user.advance(T + 2 * MIN)
    assert user.brief() == [("casual_browser", "enter", "casual_browser.entry", T),
                            ("high_intent", "enter", "high_intent.entry", T + 2 * MIN)]
    assert user.profile["primary_segment"] == "high_intent"
    assert user.timer == T + 32 * MIN - 1  # the session closes, then (+1 ms) high intent lapses
    user.advance(T + 32 * MIN)
    assert user.brief()[2:] == [("high_intent", "exit", "high_intent_lapsed", T + 32 * MIN)]
    assert [c["seq"] for c in user.changes] == [1, 2, 3]


def test_cart_abandoner_enters_24_hours_after_an_unpaid_add_to_cart_on_the_watermark() -> None:
    user = Driver()
    user.event(T, "add_to_cart")
    user.advance(T + DAY - 1)
    assert [c for c in user.brief() if c[0] == "cart_abandoner"] == []
    user.advance(T + DAY)
    assert user.brief()[-1] == ("cart_abandoner", "enter", "cart_abandoned", T + DAY)
    assert user.profile["primary_segment"] == "cart_abandoner"
    user.event(T + 2 * DAY, "purchase")
    user.advance(T + 2 * DAY)
    assert user.brief()[-1] == ("cart_abandoner", "exit", "cart_recovered", T + 2 * DAY)


def test_a_purchase_within_24_hours_cancels_the_cart_abandoner_deadline() -> None:
    user = Driver()
    user.event(T, "add_to_cart")
    user.event(T + DAY - 1, "purchase")  # arrives before the watermark reaches the deadline
    user.advance(T + 3 * DAY)
    assert "cart_abandoner" not in {c[0] for c in user.brief()}


def test_a_deadline_is_decided_before_a_later_event_even_when_both_are_released_at_once() -> None:
    """In event time the user entered at +24 h and left at +25 h: a watermark that jumps past
    both (a replay reads everything before the first watermark) gives the same two changes."""
    user = Driver()
    user.event(T, "add_to_cart")
    user.event(T + 25 * HOUR, "purchase")
    user.advance(T + 26 * HOUR)
    assert [c for c in user.brief() if c[0] == "cart_abandoner"] == [
        ("cart_abandoner", "enter", "cart_abandoned", T + DAY),
        ("cart_abandoner", "exit", "cart_recovered", T + 25 * HOUR)]


STREAM = [("page_view", 0), ("product_view", 20_000), ("product_view", 40_000), ("click", 41_000),
          ("product_view", 45_000), ("add_to_cart", 50_000), ("scroll", 55_000), ("product_view", 3 * MIN),
          ("purchase", 4 * MIN), ("product_view", 50 * MIN), ("page_view", 51 * MIN),
          ("product_view", 52 * MIN), ("product_view", 52 * MIN + 1), ("add_to_cart", 53 * MIN),
          ("page_view", 3 * HOUR)]


def run(order: list[tuple[str, int]], step_ms: int, ooo_ms: int = 5_000) -> Driver:
    """The watermark trails the largest time seen by ``ooo_ms`` and moves every ``step_ms``."""
    user = Driver()
    latest = next_move = -(2**63)
    for event_type, offset in order:
        latest = max(latest, T + offset)
        if latest >= next_move:
            user.advance(latest - ooo_ms)
            next_move = latest + step_ms
        user.event(T + offset, event_type, eid=f"{event_type}-{offset}", scroll_depth=0.9 if event_type == "scroll" else None,
                   dwell_ms=200_000 if event_type == "scroll" else None)
    user.end(final_watermark=T + 3 * HOUR - ooo_ms)
    return user


def test_segment_changes_and_versions_do_not_depend_on_arrival_order_or_watermark_steps() -> None:
    expected = run(STREAM, step_ms=1)
    assert len(expected.changes) >= 6
    for seed in range(8):
        rng = random.Random(seed)
        shuffled = sorted(STREAM, key=lambda e: e[1] + rng.uniform(0, 5_000))  # displaced by < 5 s
        for step_ms in (1, 10_000, HOUR):
            actual = run(shuffled, step_ms)
            assert actual.changes == expected.changes
            assert actual.profile == expected.profile


def test_at_the_end_of_input_held_events_are_given_but_deadlines_fire_only_up_to_the_final_watermark() -> None:
    for final, lapsed in ((T + 31 * MIN, False), (T + 32 * MIN, True)):
        user = Driver()
        for i in range(3):
            user.event(T + i * MIN, "product_view")
        user.end(final_watermark=final)
        assert ("high_intent", "enter", "high_intent.entry", T + 2 * MIN) in user.brief()
        assert (("high_intent", "exit", "high_intent_lapsed", T + 32 * MIN) in user.brief()) is lapsed
    user = Driver()
    user.event(T, "product_view")
    user.end(final_watermark=None)
    assert user.brief() == [("casual_browser", "enter", "casual_browser.entry", T)]


def test_an_event_behind_the_watermark_is_given_at_once() -> None:
    user = Driver()
    user.event(T + 10 * MIN)
    user.advance(T + 10 * MIN)
    version = user.state.version
    user.event(T + 9 * MIN, "product_view")  # 1 min late, within the allowed lateness
    user.event(T + 9 * MIN + 1, "product_view")
    user.event(T + 9 * MIN + 2, "product_view")
    assert user.brief()[-1] == ("high_intent", "enter", "high_intent.entry", T + 10 * MIN)  # at the rules' clock
    assert user.state.version == version + 3 + 1  # three events, one rules step (the third view)


def test_a_rules_update_re_decides_at_the_next_call_and_removed_segments_are_left() -> None:
    user = Driver()
    for i in range(3):
        user.event(T + i * MIN, "product_view")
    user.advance(T + 2 * MIN)
    updated = RuleSet('version: "v2"\nfeatures:\n  views: {agg: count, event_type: product_view, over: 10m}\n'
                      'segments:\n  browsing: {entry: views >= 2}\n', "rules topic")
    user.logic = LOGIC.with_rules(updated)
    user.event(T + 3 * MIN, "click")  # the user's next call (an event or a timer) re-decides
    assert user.changes[-3:] == [
        {"user_id": "u", "segment": "casual_browser", "action": "exit",
         "cause": {"rule": "casual_browser.removed", "features": {}}, "event_time": T + 2 * MIN,
         "rules_version": "v2", "seq": 3},
        {"user_id": "u", "segment": "high_intent", "action": "exit",
         "cause": {"rule": "high_intent.removed", "features": {}}, "event_time": T + 2 * MIN,
         "rules_version": "v2", "seq": 4},
        {"user_id": "u", "segment": "browsing", "action": "enter",
         "cause": {"rule": "browsing.entry", "features": {"views": 3}}, "event_time": T + 2 * MIN,
         "rules_version": "v2", "seq": 5},
    ]
    assert (user.profile["segments"], user.profile["rules_version"]) == ({"browsing": T + 2 * MIN}, "v2")


def test_rules_that_read_a_window_the_logic_does_not_keep_are_refused() -> None:
    small = UserLogic(LOGIC.session_rules, (10 * MIN, 7 * DAY), 60, DAY, 3)
    with pytest.raises(RulesError, match="feature 'purchases_30d': reads a 30d window"):
        small.with_rules(RULES)


def test_without_rules_there_are_no_segments_and_no_extra_timers() -> None:
    plain = Driver(UserLogic(LOGIC.session_rules, LOGIC.window_sizes, 60, DAY, 3))
    plain.event(T)
    assert plain.timer == T + 30 * MIN - 1  # the session's close, not the event's release
    plain.end(final_watermark=T)
    assert plain.changes == [] and plain.profile["segments"] == {}


def test_state_restored_after_the_windows_changed_keeps_the_kept_windows() -> None:
    user = Driver(UserLogic(LOGIC.session_rules, (10 * MIN, 7 * DAY, 30 * DAY), 60, DAY, 3).with_rules(RULES))
    user.event(T, "purchase")
    user.advance(T)
    user.logic = LOGIC  # restarted with more windows (1 h and 24 h among them)
    user.event(T + MIN, "purchase")
    user.advance(T + MIN)

    def purchases(size: int) -> int:
        window = next(w for w in user.state.features.windows if w.size_ms == size)
        return sum(acc.counts.get("purchase", 0) for acc in window.buckets.values())

    assert [w.size_ms for w in user.state.features.windows] == list(LOGIC.window_sizes)
    assert (purchases(30 * DAY), purchases(HOUR)) == (2, 1)  # a kept window keeps its history


def test_a_reset_leaves_every_segment_and_starts_afresh_keeping_consent_ids_and_numbering() -> None:
    user = Driver()
    for n in range(3):
        user.event(T + n * MIN, "product_view", category_id="c1")
    user.event(T + 3 * MIN, "add_to_cart")
    user.advance(T + 4 * MIN)
    user.state.consent, user.state.anonymous_ids = "granted", ["anon-1"]
    members, old = dict(user.state.segments.members), user.state
    assert members  # something to leave
    fresh, result = LOGIC.reset(old, "user.reset")
    exits = [c.as_record() for c in result.changes]
    assert sorted(c["segment"] for c in exits) == sorted(members)
    assert {(c["action"], c["cause"]["rule"]) for c in exits} == {("exit", "user.reset")}
    assert [c["seq"] for c in exits] == list(range(len(user.changes) + 1, len(user.changes) + 1 + len(exits)))
    assert result.profile_changed and fresh.version > old.version
    assert fresh.changes_made == old.changes_made == exits[-1]["seq"]
    assert (fresh.consent, fresh.anonymous_ids, fresh.seen_event_ids) == ("granted", ["anon-1"], old.seen_event_ids)
    profile = LOGIC.profile(fresh)
    assert (profile["events_total"], profile["segments"], profile["top_categories"], profile["first_seen"]) == \
        (0, {}, [], None)
    assert fresh.session_state.events == [] and fresh.learning is None
    # a redelivered old event is still a duplicate; a new one counts from zero
    again = LOGIC.on_event(fresh, Event("product_view-" + str(T), "product_view", T, "u"), T + 4 * MIN)
    assert again.outcome is Outcome.DUPLICATE
    LOGIC.on_event(fresh, Event("new", "page_view", T + 5 * MIN, "u"), T + 4 * MIN)
    assert LOGIC.profile(fresh)["events_total"] == 1


def test_a_reset_of_a_user_in_no_segment_changes_nothing_but_the_state() -> None:
    user = Driver()
    fresh, result = LOGIC.reset(user.state, "user.reset")
    assert result.changes == [] and fresh.version == user.state.version + 1
