"""Purchase propensity: P(the user's current session ends in a purchase), scored on every event.

Model: ``StandardScaler | LogisticRegression``. The features are a fixed set: the type of
the event the prediction is made at (one-hot: "the user has just added to cart", which session
counts cannot tell; on the JD data it raised the progressive ROC AUC from 0.61 to 0.65), and
log-scaled counts and durations, so a linear model over standardised inputs is enough, its state is one mean, variance and weight per feature (bounded, whatever the traffic), it
gives probabilities for log loss, and a prediction costs microseconds, which matters because
every event is scored.

Examples and labels, one learned example per labelled session:

- Each event of a session whose label is not known yet is scored, and its (features,
  prediction) replaces the session's *pending example* in the user's ``LabelState``.
- A purchase makes the label known: positive. The example learned is the pending one: the
  features and prediction at the last event processed before the purchase.
- A session emitted closed (or updated) without a purchase makes it known: negative, learned
  from the pending example of its last processed event.
- A session is labelled once. Sessions that overlap in event time count as the same session
  (a late event that extends or merges sessions changes the session id): every pending
  example inside the span is consumed by the label, and after it nothing in the span is
  learned again, whether a second purchase, a purchase after the close, a close after the
  purchase, an update or a retraction.
- A purchase with no pending example (the session's first event is the purchase) labels the
  session but no prediction was made before the answer was known, so it is counted as
  ``unscored`` and not learned: it would teach the model nothing it can use at the next
  event and would inflate the metrics.

Progressive validation: when a label is known, the prediction stored with the example (made
before the model saw the label) updates the metrics, then the model learns the example. That
is ``river.evaluate.progressive_val_score`` with each question asked at the pending event and
its answer revealed when the label becomes known (the parity test checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from river import compose, linear_model, metrics, preprocessing, utils

from personalization.core import sessions
from personalization.core.evolvable import positional
from personalization.core.events import EVENT_TYPES
from personalization.core.sessions import SessionRules, SessionState, SessionSummary

SESSION_EVENT_TYPES: tuple[str, ...] = tuple(t for t in EVENT_TYPES if t != "purchase")
FEATURE_NAMES: tuple[str, ...] = (
    *(f"event_{t}" for t in SESSION_EVENT_TYPES),
    *(f"session_{t}" for t in SESSION_EVENT_TYPES),
    "session_duration_s",
    "session_max_scroll_depth",
    "session_dwell_s",
    "session_items",
    "session_categories",
    "purchases_before",
    "sessions_closed",
    "events_1h",
    "events_24h",
)


def features(
    *,
    event_type: str,
    session_counts: Mapping[str, int],
    session_duration_ms: int,
    session_max_scroll_depth: float,
    session_dwell_ms: int,
    session_items: int,
    session_categories: int,
    lifetime_purchases: int,
    sessions_closed: int,
    events_1h: int,
    events_24h: int,
) -> dict[str, float]:
    """The model input, always the keys of ``FEATURE_NAMES`` in that order.

    ``event_type`` is the type of the event being scored (never ``purchase``: the answer is
    known then, nothing is predicted). Counts and durations are heavy-tailed, so they enter as ``log1p``. Purchases are the
    label, never a feature of the session: session purchase counts are ignored, and lifetime
    purchases minus this session's are the purchases *before* it.
    """
    x = {f"event_{t}": float(event_type == t) for t in SESSION_EVENT_TYPES}
    x.update({f"session_{t}": math.log1p(session_counts.get(t, 0)) for t in SESSION_EVENT_TYPES})
    x["session_duration_s"] = math.log1p(session_duration_ms / 1000)
    x["session_max_scroll_depth"] = float(session_max_scroll_depth)
    x["session_dwell_s"] = math.log1p(session_dwell_ms / 1000)
    x["session_items"] = math.log1p(session_items)
    x["session_categories"] = math.log1p(session_categories)
    x["purchases_before"] = math.log1p(max(lifetime_purchases - session_counts.get("purchase", 0), 0))
    x["sessions_closed"] = math.log1p(sessions_closed)
    x["events_1h"] = math.log1p(events_1h)
    x["events_24h"] = math.log1p(events_24h)
    return x


def new_model() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


class Propensity:
    """The shared classifier with its progressive-validation metrics and example counters.

    Whole-run ROC AUC is River's thresholded approximation with 100 thresholds (10, the
    default, is too coarse when most probabilities sit near a low base rate); the recent
    window uses the exact ``RollingROCAUC``.
    """

    def __init__(self, window: int = 1000) -> None:
        self.model = new_model()
        self.window = window
        self.roc_auc = metrics.ROCAUC(n_thresholds=100)
        self.log_loss = metrics.LogLoss()
        self.recent_roc_auc = metrics.RollingROCAUC(window_size=window)
        self.recent_log_loss = utils.Rolling(metrics.LogLoss(), window_size=window)
        self.learned = 0
        self.positives = 0
        self.negatives = 0
        self.unscored = 0

    def predict(self, x: dict[str, float]) -> float:
        return self.model.predict_proba_one(x).get(True, 0.0)

    def learn(self, x: dict[str, float], label: bool, prediction: float) -> None:
        """Score the earlier prediction, then learn: predict-before-learn by construction."""
        for metric in (self.roc_auc, self.log_loss, self.recent_roc_auc, self.recent_log_loss):
            metric.update(label, prediction)
        self.model.learn_one(x, label)
        self.learned += 1

    @property
    def labels(self) -> int:
        """Labelled sessions with an example; equals ``learned`` unless an example was lost."""
        return self.positives + self.negatives

    def metrics(self) -> dict[str, float | int]:
        return {
            "examples_learned": self.learned,
            "labels": self.labels,
            "positives": self.positives,
            "negatives": self.negatives,
            "unscored_sessions": self.unscored,
            "roc_auc": float(self.roc_auc.get()),   # plain floats: River returns numpy scalars
            "log_loss": float(self.log_loss.get()),
            "recent_window": self.window,
            "recent_roc_auc": float(self.recent_roc_auc.get()),
            "recent_log_loss": float(self.recent_log_loss.get()),
        }


@positional
@dataclass(slots=True)
class Pending:
    ts: int
    x: dict[str, float]
    prediction: float
    question: int = 0   # the caller's number for this question (the trainer counts them)


@positional
@dataclass(frozen=True, slots=True)
class Labelled:
    start: int
    end: int
    label: bool


@positional
@dataclass(slots=True)
class LabelState:
    """Per user (keyed state): at most one pending example per open session id, in the order
    they were last updated, and the spans already labelled, kept until no event can reach them."""

    pending: dict[str, Pending] = field(default_factory=dict)
    labelled: dict[str, Labelled] = field(default_factory=dict)


class Learned(NamedTuple):
    session_id: str
    label: bool
    x: dict[str, float]
    prediction: float
    question: int = 0


class Score(NamedTuple):
    """``known``: the session already has its purchase, so the probability is 1, not a guess."""

    probability: float
    known: bool
    learned: Learned | None


def on_event(model: Propensity, state: LabelState, session: SessionSummary, x: dict[str, float],
             ts: int, is_purchase: bool, question: int = 0) -> Score:
    """Score one processed event of ``session`` (the session holding it, after adding it).

    ``question``: a number the caller gives this question, kept with the pending example and
    returned with it when it is learned (the trainer numbers questions for the parity check).
    """
    prior = _label_of(state, session)
    if prior is not None:
        # The span grows with the session, so ``forget`` cannot drop it while events still arrive.
        state.labelled[session.session_id] = Labelled(session.start, session.end, prior)
        if prior or is_purchase:
            return Score(1.0, True, None)
        return Score(model.predict(x), False, None)   # late event in a session closed without purchase
    if is_purchase:
        return Score(1.0, True, _label(model, state, session, True))
    prediction = model.predict(x)
    state.pending.pop(session.session_id, None)   # re-insert: the dict order is the update order
    state.pending[session.session_id] = Pending(ts, x, prediction, question)
    return Score(prediction, False, None)


def on_session(model: Propensity, state: LabelState, summary: SessionSummary) -> Learned | None:
    """Handle one session emission (closed, updated or retracted) from ``sessions.advance``."""
    if summary.status == "retracted":
        return None   # its events belong to a session that will be emitted under another id
    prior = _label_of(state, summary)
    if prior is not None:
        _consume(state, summary)
        state.labelled[summary.session_id] = Labelled(summary.start, summary.end, prior)
        return None
    return _label(model, state, summary, summary.converted)


def forget(state: LabelState, watermark: int, horizon_ms: int) -> None:
    """Drop labelled spans no admissible event can reach: ``horizon_ms`` = gap + allowed lateness."""
    for sid in [sid for sid, span in state.labelled.items() if watermark >= span.end + horizon_ms]:
        del state.labelled[sid]


def session_containing(user_id: str, state: SessionState, rules: SessionRules, ts: int) -> SessionSummary:
    """The session (open or closed) that holds the event at ``ts``, which must have been added."""
    for events in sessions.split(state.events, rules):
        if events[0].ts <= ts <= events[-1].ts:
            return sessions.summarize(user_id, events, "open", 0)
    raise ValueError(f"no session of {user_id} holds an event at {ts}")


def _label_of(state: LabelState, session: SessionSummary) -> bool | None:
    """The label of a labelled span overlapping this session, if any."""
    for span in state.labelled.values():
        if span.start <= session.end and session.start <= span.end:
            return span.label
    return None


def _consume(state: LabelState, session: SessionSummary) -> Pending | None:
    """Remove the pending examples inside the session; return the one updated last."""
    inside = [sid for sid, p in state.pending.items() if session.start <= p.ts <= session.end]
    consumed = [state.pending.pop(sid) for sid in inside]
    return consumed[-1] if consumed else None


def _label(model: Propensity, state: LabelState, session: SessionSummary, label: bool) -> Learned | None:
    state.labelled[session.session_id] = Labelled(session.start, session.end, label)
    example = _consume(state, session)
    if example is None:
        model.unscored += 1
        return None
    if label:
        model.positives += 1
    else:
        model.negatives += 1
    model.learn(example.x, label, example.prediction)
    return Learned(session.session_id, label, example.x, example.prediction, example.question)
