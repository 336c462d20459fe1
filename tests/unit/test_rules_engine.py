"""The rules engine (personalization.core.rules.engine): hysteresis, hierarchy, primary segment,
score decay, timed and inactivity triggers, decision order in event time, rules updates.

Rules used throughout (RULES below): ``views`` = product views in 10 minutes, ``a`` / ``b`` =
clicks / favorites in the session, ``points`` = 1 x click + 10 x purchase with a 1 h half-life;
``abandoned`` arms 1 h after an add_to_cart unless a purchase comes first.
"""

from __future__ import annotations

import pickle
import random

import pytest

from personalization.core.rules import (
    Aggregates, Cause, FeatureInputs, RuleSet, SegmentChange, SegmentState, decay_score, score_at,
)

HOUR = 3_600_000
DAY = 24 * HOUR
RULES = RuleSet("""\
version: "e1"
features:
  views: {agg: count, event_type: product_view, over: 10m}
  a: {agg: count, event_type: click, over: session}
  b: {agg: count, event_type: favorite, over: session}
scores:
  points: {weights: {click: 1, purchase: 10}, half_life: 1h}
segments:
  hot: {entry: views >= 3, exit: views <= 1, priority: 5}
  parent: {entry: a >= 1, priority: 1}
  child: {parent: parent, entry: b >= 2, priority: 1}
  waiting: {priority: 9}
  active: {entry: points >= 10, exit: points < 5}
triggers:
  abandoned: {on: add_to_cart, unless: purchase, within: 1h, then: {enter: waiting}}
  recovered: {on: purchase, then: {exit: waiting}}
  promote: {on: favorite, then: {enter: child}}
  quiet: {inactive_for: 1d, then: {exit: active}}
""", "rules/e.yaml")


def inputs(views: int = 0, a: int = 0, b: int = 0) -> FeatureInputs:
    return FeatureInputs(session=Aggregates(counts={"click": a, "favorite": b}),
                         windows={600_000: Aggregates(counts={"product_view": views})})


def brief(changes: list[SegmentChange]) -> list[tuple]:
    return [(c.segment, c.action, c.cause.rule, dict(c.cause.features), c.event_time) for c in changes]


@pytest.fixture
def state() -> SegmentState:
    return SegmentState("u1")


# --- hysteresis -------------------------------------------------------------------------

def test_oscillating_around_the_threshold_changes_only_when_the_other_threshold_is_crossed(state) -> None:
    views = [0, 2, 3, 4, 2, 3, 2, 1, 2, 3, 1, 0, 3, 2, 3, 2]
    changes = [c for t, v in enumerate(views, start=1) for c in RULES.evaluate(state, inputs(views=v), t)]
    assert brief(changes) == [
        ("hot", "enter", "hot.entry", {"views": 3}, 3),
        ("hot", "exit", "hot.exit", {"views": 1}, 8),
        ("hot", "enter", "hot.entry", {"views": 3}, 10),
        ("hot", "exit", "hot.exit", {"views": 1}, 11),
        ("hot", "enter", "hot.entry", {"views": 3}, 13),
    ]
    assert state.members == {"hot": 13}


def test_without_an_exit_rule_a_segment_is_left_when_entry_no_longer_holds(state) -> None:
    assert brief(RULES.evaluate(state, inputs(a=1), 1)) == [("parent", "enter", "parent.entry", {"a": 1}, 1)]
    assert RULES.evaluate(state, inputs(a=5), 2) == []
    assert brief(RULES.evaluate(state, inputs(a=0), 3)) == [("parent", "exit", "parent.exit", {"a": 0}, 3)]


def test_a_change_carries_user_rule_features_time_and_rules_version(state) -> None:
    change, = RULES.evaluate(state, inputs(views=4), 1_000)
    assert change == SegmentChange("u1", "hot", "enter", Cause("hot.entry", {"views": 4}), 1_000, "e1")
    assert change.as_record() == {
        "user_id": "u1", "segment": "hot", "action": "enter",
        "cause": {"rule": "hot.entry", "features": {"views": 4}}, "event_time": 1_000, "rules_version": "e1",
    }


# --- hierarchy and primary segment ------------------------------------------------------

def test_a_child_holds_only_while_its_parent_holds(state) -> None:
    assert RULES.evaluate(state, inputs(b=2), 1) == []  # child's entry holds, parent's does not
    assert brief(RULES.evaluate(state, inputs(a=1, b=2), 2)) == [  # parents are decided first
        ("parent", "enter", "parent.entry", {"a": 1}, 2),
        ("child", "enter", "child.entry", {"b": 2}, 2),
    ]
    assert brief(RULES.evaluate(state, inputs(a=0, b=2), 3)) == [  # leaving the parent leaves the child
        ("parent", "exit", "parent.exit", {"a": 0}, 3),
        ("child", "exit", "parent.exit", {"a": 0}, 3),
    ]
    assert state.members == {}


def test_a_trigger_cannot_enter_a_child_without_its_parent(state) -> None:
    assert RULES.on_event(state, "favorite", 1) == []
    RULES.evaluate(state, inputs(a=1), 2)
    assert brief(RULES.on_event(state, "favorite", 3)) == [("child", "enter", "promote", {}, 3)]


def test_primary_is_the_highest_priority_then_the_first_name(state) -> None:
    assert RULES.primary(state) is None
    RULES.evaluate(state, inputs(a=1), 1)
    assert RULES.primary(state) == "parent"
    RULES.on_event(state, "favorite", 2)  # child: same priority 1, "child" < "parent"
    assert RULES.primary(state) == "child"
    RULES.evaluate(state, inputs(a=1, views=3), 3)
    assert RULES.primary(state) == "hot"


# --- scores -----------------------------------------------------------------------------

def test_decay_score_halves_per_half_life_and_folds_late_events_into_the_present() -> None:
    assert decay_score(0.0, 0, 0, 10, 1_000) == (10.0, 0)
    assert decay_score(10.0, 0, 1_000, 1, 1_000) == (6.0, 1_000)  # 10 / 2 + 1
    assert decay_score(6.0, 1_000, 3_000, 2, 1_000) == (3.5, 3_000)  # 6 / 4 + 2
    assert decay_score(3.5, 3_000, 2_000, 4, 1_000) == (5.5, 3_000)  # late: 3.5 + 4 / 2, stays as of 3 s
    assert decay_score(2.0, 5, 3, 1, None) == (3.0, 5)  # no half-life: a weighted count


def test_score_at_decays_to_the_reading_time_and_rounds_to_six_digits() -> None:
    assert score_at(8.0, 1_000, 3_000, 1_000) == 2.0
    assert score_at(1.0, 0, 1_000, 3_000) == 0.793701  # 2 ** (-1/3)
    assert score_at(8.0, 1_000, 9_000, None) == 8.0


def test_scores_do_not_depend_on_arrival_order(state) -> None:
    events = [("purchase", 0), ("click", HOUR), ("click", 2 * HOUR), ("favorite", 2 * HOUR), ("click", 90 * 60_000)]
    for event_type, ts in sorted(events, key=lambda e: e[1]):
        RULES.on_event(state, event_type, ts)
    sorted_scores = RULES.read_scores(state, 2 * HOUR)
    for seed in range(5):
        shuffled = SegmentState("u1")
        for event_type, ts in random.Random(seed).sample(events, len(events)):
            RULES.on_event(shuffled, event_type, ts)
        assert RULES.read_scores(shuffled, 2 * HOUR) == sorted_scores
    # 10 / 4 + 1 / 2 + 1 + 1 * 2 ** -0.5 (the click at 1.5 h)
    assert sorted_scores == {"points": round(2.5 + 0.5 + 1 + 2 ** -0.5, 6)}


def test_a_score_condition_reads_the_score_decayed_to_the_evaluation_time(state) -> None:
    RULES.on_event(state, "purchase", 0)
    assert brief(RULES.evaluate(state, inputs(), 0)) == [("active", "enter", "active.entry", {"points": 10.0}, 0)]
    assert RULES.evaluate(state, inputs(), HOUR) == []  # 5.0: inside the hysteresis band
    assert brief(RULES.evaluate(state, inputs(), HOUR + 1)) == [
        ("active", "exit", "active.exit", {"points": 4.999999}, HOUR + 1),
    ]


# --- timed triggers ---------------------------------------------------------------------

def test_a_timed_trigger_fires_when_the_watermark_reaches_its_deadline(state) -> None:
    assert RULES.on_event(state, "add_to_cart", 1_000) == []
    assert state.armed["abandoned"] == [1_000 + HOUR]
    assert RULES.next_deadline(state) == 1_000 + HOUR
    assert RULES.on_deadline(state, 1_000 + HOUR - 1) == []
    assert brief(RULES.on_deadline(state, 1_000 + HOUR)) == [("waiting", "enter", "abandoned", {}, 1_000 + HOUR)]
    assert RULES.next_deadline(state) == 1_000 + DAY  # only the inactivity clock is left
    assert brief(RULES.on_event(state, "purchase", 5 * HOUR)) == [("waiting", "exit", "recovered", {}, 5 * HOUR)]


def test_an_unless_event_before_the_deadline_cancels_it(state) -> None:
    RULES.on_event(state, "add_to_cart", 0)
    assert RULES.on_event(state, "purchase", HOUR - 1) == []
    assert "abandoned" not in state.armed
    assert RULES.on_deadline(state, 10 * HOUR) == []
    assert state.members == {}


def test_the_unless_window_is_from_the_on_event_up_to_the_deadline_excluded(state) -> None:
    RULES.on_event(state, "purchase", 0)       # before the add_to_cart: does not cancel it
    RULES.on_event(state, "add_to_cart", 10)
    RULES.on_event(state, "add_to_cart", 20)
    RULES.on_event(state, "purchase", 10 + HOUR)  # at the first deadline: too late for it, cancels the second
    assert state.armed["abandoned"] == [10 + HOUR]


def test_an_unless_event_that_arrives_before_its_on_event_still_cancels_it(state) -> None:
    RULES.on_event(state, "purchase", 500)
    RULES.on_event(state, "add_to_cart", 100)  # late: the purchase 400 ms after it is known
    assert "abandoned" not in state.armed


def test_each_on_event_has_its_own_deadline(state) -> None:
    RULES.on_event(state, "add_to_cart", 0)
    RULES.on_event(state, "purchase", 10 * 60_000)      # cancels the first
    RULES.on_event(state, "add_to_cart", 30 * 60_000)
    RULES.on_event(state, "add_to_cart", 30 * 60_000)   # same deadline once
    assert state.armed["abandoned"] == [90 * 60_000]


def test_a_stale_deadline_does_not_override_a_later_decision(state) -> None:
    """A replay applies every event before the first watermark: the purchase 2 h after the cart
    is seen before the 1 h deadline fires. In event time the user entered at 1 h and left at
    2 h, so the end state is "not a member" either way."""
    RULES.on_event(state, "add_to_cart", 0)
    assert RULES.on_event(state, "purchase", 2 * HOUR) == []
    assert RULES.on_deadline(state, 2**63 - 1) == []
    assert state.members == {}

    in_order = SegmentState("u1")
    RULES.on_event(in_order, "add_to_cart", 0)
    assert [c.action for c in RULES.on_deadline(in_order, HOUR)] == ["enter"]
    assert [c.action for c in RULES.on_event(in_order, "purchase", 2 * HOUR)] == ["exit"]
    assert in_order.members == state.members


# --- inactivity -------------------------------------------------------------------------

def test_inactivity_fires_a_period_after_the_latest_event(state) -> None:
    RULES.on_event(state, "purchase", 0)
    RULES.evaluate(state, inputs(), 0)
    RULES.on_event(state, "click", 1_000)
    RULES.on_event(state, "click", 500)  # late: the latest event is still at 1 s
    assert RULES.next_deadline(state) == 1_000 + DAY
    assert RULES.on_deadline(state, 1_000 + DAY - 1) == []
    assert brief(RULES.on_deadline(state, 1_000 + DAY)) == [("active", "exit", "quiet", {}, 1_000 + DAY)]
    assert RULES.next_deadline(state) is None


def test_an_event_after_an_unfired_inactivity_deadline_settles_it_first(state) -> None:
    RULES.on_event(state, "purchase", 0)
    RULES.evaluate(state, inputs(), 0)
    assert brief(RULES.on_event(state, "click", 2 * DAY)) == [("active", "exit", "quiet", {}, DAY)]
    assert RULES.next_deadline(state) == 3 * DAY


def test_evaluation_does_not_override_a_later_trigger_decision(state) -> None:
    RULES.on_event(state, "purchase", 0)
    RULES.evaluate(state, inputs(), 0)
    RULES.on_deadline(state, DAY)  # quiet: out at 1 d
    RULES.on_event(state, "purchase", 10)  # late event; the inputs' anchor stays at 10 ms < 1 d
    assert RULES.evaluate(state, inputs(), 10) == []
    assert state.members == {}


# --- state and rules updates ------------------------------------------------------------

def test_segment_state_is_small_and_picklable(state) -> None:
    RULES.on_event(state, "add_to_cart", 0)
    RULES.on_event(state, "purchase", 5)
    RULES.evaluate(state, inputs(views=3), 5)
    assert pickle.loads(pickle.dumps(state)) == state
    assert state == SegmentState(
        user_id="u1", members={"hot": 5, "active": 5}, decided_at={"waiting": 5, "hot": 5, "active": 5},
        scores={"points": (10.0, 5)}, armed={"quiet": [5 + DAY]}, last_unless={"abandoned": 5}, last_event=5,
    )


def test_after_a_rules_update_removed_segments_are_left_and_dead_state_dropped(state) -> None:
    RULES.on_event(state, "add_to_cart", 0)
    RULES.evaluate(state, inputs(views=3, a=1), 0)
    updated = RuleSet('version: "e2"\nsegments:\n  parent: {entry: true}\n', "rules/e2.yaml")
    changes = updated.evaluate(state, FeatureInputs(), 1)
    assert brief(changes) == [("hot", "exit", "hot.removed", {}, 1)]
    assert changes[0].rules_version == "e2"
    assert updated.next_deadline(state) is None
    assert state == SegmentState("u1", members={"parent": 0}, decided_at={"parent": 0}, last_event=0)


def test_after_a_rules_update_a_member_whose_new_parent_is_not_held_leaves(state) -> None:
    RULES.evaluate(state, inputs(a=1), 0)
    updated = RuleSet('version: "e2"\nsegments:\n  boss: {entry: false}\n  parent: {parent: boss, entry: true}\n')
    assert brief(updated.evaluate(state, FeatureInputs(), 1)) == [("parent", "exit", "parent.parent", {}, 1)]
