"""Propensity: features, label bookkeeping (one learned example per labelled session, never
twice), progressive-validation parity with River, and restore mid-stream.

The bookkeeping tests hand the core session spans directly. ``Operator`` below plays the Flink
operator in plain Python (UserLogic for sessions, then the learning core), which is the
mapping the real operator has to implement.
"""

from __future__ import annotations

import math
import pickle
import random
from fractions import Fraction
from unittest.mock import ANY

import pytest
from river import evaluate, metrics

from personalization.core.events import Event
from personalization.core.learning.propensity import (
    FEATURE_NAMES,
    LabelState,
    Learned,
    Propensity,
    Score,
    features,
    forget,
    new_model,
    on_event,
    on_session,
    session_containing,
)
from personalization.core.sessions import SessionRules, SessionSummary, session_id
from personalization.core.user import END_OF_INPUT, Outcome, UserLogic, UserState

# --- features ------------------------------------------------------------------------------

def x_of(**overrides) -> dict[str, float]:
    values = dict(event_type="add_to_cart", session_counts={"page_view": 2, "add_to_cart": 1}, session_duration_ms=59_000,
                  session_max_scroll_depth=0.5, session_dwell_ms=9_000, session_items=3, session_categories=1,
                  lifetime_purchases=3, sessions_closed=7, events_1h=4, events_24h=19)
    return features(**{**values, **overrides})


def test_features_are_log_scaled_and_in_a_fixed_order() -> None:
    x = x_of()
    assert list(x) == list(FEATURE_NAMES)
    assert [name for name, value in x.items() if name.startswith("event_") and value] == ["event_add_to_cart"]
    assert x["event_add_to_cart"] == 1.0 and x["event_page_view"] == 0.0
    assert x["session_page_view"] == math.log1p(2)
    assert x["session_add_to_cart"] == math.log1p(1)
    assert x["session_click"] == 0.0
    assert x["session_duration_s"] == math.log1p(59)
    assert x["session_dwell_s"] == math.log1p(9)
    assert x["session_max_scroll_depth"] == 0.5
    assert (x["session_items"], x["session_categories"]) == (math.log1p(3), math.log1p(1))
    assert (x["purchases_before"], x["sessions_closed"]) == (math.log1p(3), math.log1p(7))
    assert (x["events_1h"], x["events_24h"]) == (math.log1p(4), math.log1p(19))


def test_purchases_are_never_a_session_feature_and_this_sessions_purchase_is_not_before_it() -> None:
    x = x_of(session_counts={"page_view": 2, "add_to_cart": 1, "purchase": 1}, lifetime_purchases=4)
    assert x == x_of()
    assert "session_purchase" not in x and "event_purchase" not in x


# --- label bookkeeping on hand-made spans ------------------------------------------------------

def span(sid: str, start: int, end: int, status: str = "open", converted: bool = False) -> SessionSummary:
    return SessionSummary(session_id=sid, user_id="u", status=status, revision=1, start=start, end=end,
                          event_count=1, counts={}, max_scroll_depth=0.0, dwell_ms=0, items=(), categories=(),
                          converted=converted)


def xn(n: int) -> dict[str, float]:
    """A distinct feature vector per event (n views in the session so far)."""
    return x_of(session_counts={"page_view": n})


@pytest.fixture
def model() -> Propensity:
    return Propensity()


def test_session_closed_without_purchase_learns_one_negative_from_its_last_event(model: Propensity) -> None:
    state = LabelState()
    s1 = on_event(model, state, span("s", 0, 0), xn(1), 0, False)
    s2 = on_event(model, state, span("s", 0, 10), xn(2), 10, False)
    assert (s1.known, s1.learned, s2.known, s2.learned) == (False, None, False, None)
    assert list(state.pending) == ["s"]
    learned = on_session(model, state, span("s", 0, 10, "closed"))
    assert learned == Learned("s", False, xn(2), s2.probability)
    assert (model.learned, model.negatives, model.positives, model.labels) == (1, 1, 0, 1)
    assert state.pending == {}


def test_purchase_learns_one_positive_from_the_last_event_before_it_when_the_session_closes(
        model: Propensity) -> None:
    """Learned at the close, as a negative is: labels reach the model in no order of class."""
    state = LabelState()
    on_event(model, state, span("s", 0, 0), xn(1), 0, False)
    before = on_event(model, state, span("s", 0, 10), xn(2), 10, False)
    score = on_event(model, state, span("s", 0, 20), xn(2), 20, True)
    assert score == Score(1.0, True, None)
    assert model.learned == 0 and list(state.converted) == ["s"]
    learned = on_session(model, state, span("s", 0, 20, "closed", converted=True))
    assert learned == Learned("s", True, xn(2), before.probability)
    assert (model.learned, model.positives, model.negatives) == (1, 1, 0)
    assert state.converted == {} and state.pending == {}


def test_after_the_purchase_nothing_in_the_session_is_learned_again(model: Propensity) -> None:
    state = LabelState()
    on_event(model, state, span("s", 0, 0), xn(1), 0, False)
    on_event(model, state, span("s", 0, 20), xn(1), 20, True)
    assert on_event(model, state, span("s", 0, 30), xn(2), 30, False) == Score(1.0, True, None)
    assert on_event(model, state, span("s", 0, 40), xn(2), 40, True) == Score(1.0, True, None)
    assert state.pending == {}
    assert on_session(model, state, span("s", 0, 40, "closed", converted=True)).label is True
    assert on_session(model, state, span("s", 0, 45, "updated", converted=True)) is None
    assert on_session(model, state, span("s", 0, 45, "retracted", converted=True)) is None
    assert (model.learned, model.labels, model.positives) == (1, 1, 1)


def test_a_purchase_after_the_close_does_not_relabel_the_session(model: Propensity) -> None:
    state = LabelState()
    on_event(model, state, span("s", 0, 0), xn(1), 0, False)
    on_session(model, state, span("s", 0, 0, "closed"))
    assert on_event(model, state, span("s", 0, 5), xn(1), 5, True) == Score(1.0, True, None)
    assert on_session(model, state, span("s", 0, 5, "updated", converted=True)) is None
    assert (model.learned, model.negatives, model.positives) == (1, 1, 0)


def test_a_late_view_in_a_session_closed_without_purchase_is_scored_but_not_kept(model: Propensity) -> None:
    state = LabelState()
    on_event(model, state, span("s", 0, 0), xn(1), 0, False)
    on_session(model, state, span("s", 0, 0, "closed"))
    score = on_event(model, state, span("s", 0, 5), xn(2), 5, False)
    assert (score.probability, score.known, score.learned) == (model.predict(xn(2)), False, None)
    assert state.pending == {}
    assert on_session(model, state, span("s", 0, 5, "updated")) is None
    assert model.learned == 1


def test_a_session_that_starts_with_its_purchase_is_labelled_but_unscored(model: Propensity) -> None:
    state = LabelState()
    assert on_event(model, state, span("s", 0, 0), xn(0), 0, True) == Score(1.0, True, None)
    assert on_event(model, state, span("s", 0, 9), xn(1), 9, False) == Score(1.0, True, None)
    assert on_session(model, state, span("s", 0, 9, "closed", converted=True)) is None
    assert (model.learned, model.labels, model.unscored) == (0, 0, 1)


def test_a_session_whose_id_changed_is_labelled_once_from_its_latest_example(model: Propensity) -> None:
    """A late event moves the start from 100 to 50: same session, new id, one label."""
    state = LabelState()
    on_event(model, state, span("A", 100, 100), xn(1), 100, False)
    late = on_event(model, state, span("B", 50, 100), xn(2), 50, False)
    assert list(state.pending) == ["A", "B"]
    assert on_session(model, state, span("B", 50, 100, "closed")) == Learned("B", False, xn(2), late.probability)
    assert state.pending == {}
    assert on_session(model, state, span("A", 100, 100, "retracted")) is None
    assert model.learned == 1


def test_merging_an_open_session_into_a_labelled_one_learns_nothing_more(model: Propensity) -> None:
    state = LabelState()
    on_event(model, state, span("A", 0, 0), xn(1), 0, False)
    on_event(model, state, span("A", 0, 10), xn(1), 10, True)      # A: positive
    on_event(model, state, span("B", 40, 40), xn(1), 40, False)     # B: pending
    on_event(model, state, span("A", 0, 40), xn(2), 25, False)      # bridging event: one session
    assert on_session(model, state, span("A", 0, 40, "closed", converted=True)) == Learned("A", True, xn(1), ANY)
    assert state.pending == {} and state.converted == {}
    assert (model.learned, model.positives) == (1, 1)


def test_two_open_sessions_are_labelled_independently(model: Propensity) -> None:
    """A new session can start before the watermark closes the previous one."""
    state = LabelState()
    first = on_event(model, state, span("A", 0, 0), xn(1), 0, False)
    second = on_event(model, state, span("B", 5_000, 5_000), xn(2), 5_000, False)
    assert on_session(model, state, span("A", 0, 0, "closed")) == Learned("A", False, xn(1), first.probability)
    assert on_session(model, state, span("B", 5_000, 5_000, "closed")) == Learned("B", False, xn(2), second.probability)
    assert model.learned == 2


def test_forget_drops_labelled_spans_no_event_can_reach(model: Propensity) -> None:
    state = LabelState()
    on_event(model, state, span("A", 0, 10), xn(1), 10, False)
    on_session(model, state, span("A", 0, 10, "closed"))
    forget(state, watermark=109, horizon_ms=100)
    assert list(state.labelled) == ["A"]
    forget(state, watermark=110, horizon_ms=100)
    assert state.labelled == {}


def test_a_session_that_goes_on_after_its_purchase_keeps_its_label_until_it_ends(model: Propensity) -> None:
    state = LabelState()
    on_event(model, state, span("s", 0, 0), xn(1), 0, False)
    on_event(model, state, span("s", 0, 20), xn(1), 20, True)
    on_event(model, state, span("s", 0, 900), xn(2), 900, False)
    forget(state, watermark=1_600, horizon_ms=1_500)       # past the purchase + horizon, not the session's end
    assert on_event(model, state, span("s", 0, 1_800), xn(3), 1_800, False) == Score(1.0, True, None)
    assert on_session(model, state, span("s", 0, 1_800, "closed", converted=True)).label is True
    assert (model.learned, model.positives) == (1, 1)


# --- the operator loop over UserLogic ----------------------------------------------------------

RULES = SessionRules(gap_ms=1_000, max_length_ms=10_000, allowed_lateness_ms=500)
LOGIC = UserLogic(session_rules=RULES, window_sizes=(3_600_000, 86_400_000), window_buckets=60,
                  dedup_horizon_ms=100_000, top_categories=3)
HORIZON = RULES.gap_ms + RULES.allowed_lateness_ms


class Operator:
    """What the Flink operator does per event and per timer, with every call numbered so the
    parity test can rebuild the order of questions and answers."""

    def __init__(self) -> None:
        self.model = Propensity()
        self.users: dict[str, tuple[UserState, LabelState]] = {}
        self.timers: dict[str, int] = {}
        self.questions: list[tuple[int, dict[str, float], float]] = []   # (call, x, prediction)
        self.answers: list[tuple[int, Learned]] = []
        self.calls = 0

    def event(self, event: Event, watermark: int) -> Score | None:
        self.fire_timers(watermark)
        user, labels = self.users.setdefault(event.user_id, (LOGIC.new_state(event.user_id), LabelState()))
        result = LOGIC.on_event(user, event, watermark)
        if result.outcome is not Outcome.PROCESSED:
            return None
        self.sessions(event.user_id, labels, result.sessions, result.next_timer)
        session = session_containing(event.user_id, user.session_state, RULES, event.ts)
        anchor = user.last_seen
        x = features(
            event_type=event.event_type, session_counts=session.counts, session_duration_ms=session.duration_ms,
            session_max_scroll_depth=session.max_scroll_depth, session_dwell_ms=session.dwell_ms,
            session_items=len(session.items), session_categories=len(session.categories),
            lifetime_purchases=user.counts.get("purchase", 0), sessions_closed=user.session_state.closed_count,
            events_1h=sum(user.windows[0].counts(anchor).values()),
            events_24h=sum(user.windows[1].counts(anchor).values()),
        )
        score = on_event(self.model, labels, session, x, event.ts, event.event_type == "purchase")
        self.calls += 1
        if not score.known:
            self.questions.append((self.calls, x, score.probability))
        if score.learned:
            self.answers.append((self.calls, score.learned))
        return score

    def fire_timers(self, watermark: int) -> None:
        for user_id, due in sorted(self.timers.items()):
            if due <= watermark:
                user, labels = self.users[user_id]
                result = LOGIC.on_timer(user, watermark)
                del self.timers[user_id]
                self.sessions(user_id, labels, result.sessions, result.next_timer)
                forget(labels, watermark, HORIZON)

    def sessions(self, user_id: str, labels: LabelState, emitted: list[SessionSummary], timer: int | None) -> None:
        for summary in emitted:
            learned = on_session(self.model, labels, summary)
            self.calls += 1
            if learned:
                self.answers.append((self.calls, learned))
        if timer is not None:
            self.timers[user_id] = timer

    def finish(self) -> None:
        for user_id in sorted(self.users):
            self.timers[user_id] = END_OF_INPUT
        self.fire_timers(END_OF_INPUT)


def ev(user: str, eid: str, ts: int, etype: str = "page_view", **fields) -> Event:
    return Event(event_id=eid, event_type=etype, ts=ts, user_id=user, **fields)


def replay(events: list[Event], out_of_orderness: int = 0, operator: Operator | None = None,
           newest: int = 0) -> Operator:
    operator = operator or Operator()
    for event in events:
        newest = max(newest, event.ts)
        operator.event(event, watermark=newest - out_of_orderness)
    operator.finish()
    return operator


HAND_MADE = [
    # u1 session 1 (0..400): views, cart, purchase, a view after it -> one positive
    ev("u1", "a1", 0), ev("u1", "a2", 200, "product_view", item_id="i1", category_id="c1"),
    ev("u1", "a3", 300, "add_to_cart", item_id="i1"), ev("u1", "a4", 350, "purchase", item_id="i1"),
    ev("u1", "a5", 400),
    # u2 session 1 (100..600): views only -> one negative
    ev("u2", "b1", 100), ev("u2", "b2", 600, "scroll", scroll_depth=0.7),
    # u3 session 1 (700): starts with its purchase -> labelled, unscored
    ev("u3", "c1", 700, "purchase"),
    # u1 session 2 (5_000..5_300): views -> one negative
    ev("u1", "a6", 5_000), ev("u1", "a7", 5_300, "click"),
    # u2 session 2 (5_100..5_200): view, purchase, purchase again -> one positive
    ev("u2", "b3", 5_100), ev("u2", "b4", 5_150, "purchase"), ev("u2", "b5", 5_200, "purchase"),
]


def test_hand_made_stream_one_example_per_labelled_session() -> None:
    operator = replay(HAND_MADE)
    model = operator.model
    assert [(a.session_id, a.label) for _, a in operator.answers] == [
        (session_id("u1", 0), True), (session_id("u2", 100), False),
        (session_id("u1", 5_000), False), (session_id("u2", 5_100), True),
    ]
    assert (model.learned, model.labels, model.positives, model.negatives, model.unscored) == (4, 4, 2, 2, 1)
    # the positive examples are the features at the event right before the purchase
    u1_positive = operator.answers[0][1]   # (labels come at the close, in the operator's timer order)
    assert math.expm1(u1_positive.x["session_add_to_cart"]) == pytest.approx(1)
    assert math.expm1(u1_positive.x["session_page_view"]) == pytest.approx(1)
    # at the end nothing is pending and every labelled span has been forgotten
    assert all(labels.empty() for _, labels in operator.users.values())


def test_a_shuffled_stream_within_the_bound_still_labels_each_session_exactly_once() -> None:
    """Which example is learned depends on arrival (a purchase that arrives before the other
    events of its session leaves it unscored), but every session gets exactly one outcome."""
    outcomes = set()
    for seed in range(30):
        shifts = random.Random(seed)
        events = sorted(HAND_MADE, key=lambda e: e.ts + shifts.randrange(300))
        model = replay(events, out_of_orderness=300).model
        assert model.learned == model.labels == model.positives + model.negatives
        assert model.negatives == 2 and model.positives + model.unscored == 3
        outcomes.add((model.positives, model.unscored))
    assert len(outcomes) > 1   # the seeds do exercise a purchase arriving first


# --- a generated multi-user stream: parity with River and restore --------------------------------

def generated_stream(seed: int, users: int = 12, sessions_per_user: int = 12, disorder: int = 300) -> list[Event]:
    """Interleaved users, sessions of 1..6 events, about a third converting; arrival order is
    event time plus up to ``disorder`` ms of jitter (within the out-of-orderness bound)."""
    rng = random.Random(seed)
    events: list[Event] = []
    for u in range(users):
        ts = rng.randrange(3_000)
        for s in range(sessions_per_user):
            buyer = rng.random() < 0.35
            n = rng.randint(1, 6)
            for k in range(n):
                etype = rng.choice(["page_view", "product_view", "click", "scroll", "add_to_cart", "favorite"])
                if buyer and k == n - 1:
                    etype = "purchase"
                events.append(Event(
                    event_id=f"u{u}-s{s}-e{k}", event_type=etype, ts=ts, user_id=f"u{u}",
                    item_id=f"i{rng.randrange(20)}", category_id=f"c{rng.randrange(5)}",
                    scroll_depth=round(rng.random(), 2) if etype == "scroll" else None,
                    dwell_ms=rng.randrange(30_000),
                ))
                ts += rng.randrange(50, 700)
            ts += rng.randrange(1_500, 6_000)
    return sorted(events, key=lambda e: (e.ts + rng.randrange(disorder), e.event_id))


def test_progressive_predictions_equal_rivers_progressive_val_score() -> None:
    """Rebuild the examples in question order with the label delays of the run, and let River's
    ``iter_progressive_val_score`` evaluate a fresh model on them: same predictions, same metrics.

    Time for River is the example's index in question order; the answer that our run learned
    between questions j-1 and j, as the r-th answer overall, expires at j - 1 + (r + 1) / (N + 2):
    after question j - 1, before question j, and in our order among answers learned there.
    """
    operator = replay(generated_stream(seed=3), out_of_orderness=300)
    questions = {id(x): (call, x, p) for call, x, p in operator.questions}
    answered = [(questions[id(learned.x)], call, learned) for call, learned in operator.answers]
    assert all(q[2] == learned.prediction for q, _, learned in answered)   # learned with the stored prediction
    examples = sorted(answered, key=lambda item: item[0][0])               # question order
    question_calls = [q[0] for q, _, _ in examples]
    answer_rank = {id(learned): r for r, (_, learned) in enumerate(operator.answers)}
    n = len(examples)
    delays = []
    for i, (_, answer_call, learned) in enumerate(examples):
        j = sum(call < answer_call for call in question_calls)
        delays.append(Fraction(j - 1) + Fraction(answer_rank[id(learned)] + 1, n + 2) - i)
    delay_iter = iter(delays)

    steps = list(evaluate.iter_progressive_val_score(
        dataset=[(learned.x, learned.label) for _, _, learned in examples],
        model=new_model(),
        metric=metrics.ROCAUC(n_thresholds=100) + metrics.LogLoss(),
        delay=lambda _x, _y: next(delay_iter),
        step=1,
        yield_predictions=True,
    ))

    assert n == len(steps) == operator.model.learned > 100
    assert 0 < operator.model.positives < n
    ours = [learned.prediction for _, learned in operator.answers]
    theirs = [step["Prediction"][True] for step in steps]
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-9
    final = steps[-1]
    assert final["ROCAUC"].get() == pytest.approx(operator.model.roc_auc.get(), abs=1e-9)
    assert final["LogLoss"].get() == pytest.approx(operator.model.log_loss.get(), abs=1e-9)


def test_restore_from_a_mid_stream_checkpoint_learns_nothing_twice() -> None:
    """Checkpoint = every user's state, label state and the shared model, pickled together."""
    events = generated_stream(seed=5)
    uninterrupted = replay(events, out_of_orderness=300)

    half = len(events) // 2
    first = Operator()
    newest = 0
    for event in events[:half]:
        newest = max(newest, event.ts)
        first.event(event, watermark=newest - 300)
    checkpoint = pickle.dumps(first)
    for event in events[half: half + 40]:     # work done after the checkpoint, then lost
        first.event(event, watermark=max(newest, event.ts) - 300)
    restored: Operator = pickle.loads(checkpoint)
    replay(events[half:], out_of_orderness=300, operator=restored, newest=newest)

    assert restored.model.learned == restored.model.labels == uninterrupted.model.learned
    assert [a for _, a in restored.answers] == [a for _, a in uninterrupted.answers]
    assert restored.model.metrics() == uninterrupted.model.metrics()
