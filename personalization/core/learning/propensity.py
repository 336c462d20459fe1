"""Purchase propensity: P(the user's current session ends in a purchase), scored on every event.

Model: ``CalibratedNaiveBayes``, Bernoulli naive Bayes over indicators of the session so far,
calibrated online. The features are a fixed set (``features``): the type of the event the
prediction is made at (one-hot: "the user has just added to cart", which session counts cannot
tell), and log-scaled counts and durations; naive Bayes reads the event type and four of them
as binned levels (``encode``). Its state is a few counts per indicator and class plus the calibration's label counts per log-odds bin (at most 81 bins; bounded,
whatever the traffic), it gives
probabilities for log loss, and a prediction costs microseconds, which matters because every
event is scored.

Examples and labels, one learned example per labelled session:

- Each event of a session whose label is not known yet is scored, and its (features,
  prediction) replaces the session's *pending example* in the user's ``LabelState``.
- A purchase makes the label known: positive. The example is the pending one (the features and
  prediction at the last event processed before the purchase), but it is learned when the
  session closes, as a negative is: every label reaches the model the session gap after the
  session's last event, whatever the class. Learned at the purchase, positives came first: early
  in a replay every learner had seen mostly positives (the first 104 labels of the demo), and its
  log loss could not beat the constant base rate known in hindsight.
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
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from river import base, metrics, naive_bayes, utils

from personalization.core import sessions
from personalization.core.events import BEHAVIOUR_TYPES
from personalization.core.evolvable import positional
from personalization.core.sessions import SessionRules, SessionState, SessionSummary

SESSION_EVENT_TYPES: tuple[str, ...] = tuple(t for t in BEHAVIOUR_TYPES if t != "purchase")
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


LOG_ODDS_LIMIT = 20.0   # |log-odds| passed on: early on, naive Bayes is all but certain of anything


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


class PlattScaling:
    """P(positive | score) = sigmoid(slope * score + intercept), refitted after every label on all
    the labels so far, so it cannot drift away as one SGD step at a time did.

    The labels are kept as counts per score bin (``BIN_WIDTH`` wide, at most 2 * limit / width + 1
    bins: bounded state). Each fit is ``NEWTON_STEPS`` Newton steps from the previous fit (a pure
    function of the counts and the previous fit: deterministic, so a restore refits the same),
    on Platt's (1999) smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2), which keep the fit
    finite while one class is all that was seen, with an L2 penalty pulling the slope to 0
    (a constant, the base rate) until the labels show the score ranks.

    Before the first label it predicts ``PRIOR_RATE``: labels come only when sessions close (the gap after their last event), so every
    prediction of a replay's first half hour is made before any label, and 0.5 then (the
    uninformed start) costs log loss 0.69 each where the base rate is a few percent. The prior is
    a domain figure (sessions converting: a few percent in e-commerce), not fitted to a dataset;
    the first label replaces it by the fit.
    """

    PRIOR_RATE = 0.03

    BIN_WIDTH = 0.5
    NEWTON_STEPS = 3
    SLOPE_L2 = 1.0
    INTERCEPT_L2 = 0.01
    MAX_STEP = 2.0      # a Newton step on few labels can overshoot far

    def __init__(self) -> None:
        self.bins: dict[int, list[int]] = {}   # bin -> [negatives, positives]
        self.positives = 0
        self.negatives = 0
        self.slope = 0.0
        self.intercept = 0.0

    def learn(self, score: float, label: bool) -> None:
        self.bins.setdefault(round(score / self.BIN_WIDTH), [0, 0])[label] += 1
        if label:
            self.positives += 1
        else:
            self.negatives += 1
        self._fit()

    def predict(self, score: float) -> float:
        if not (self.positives or self.negatives):
            return self.PRIOR_RATE
        return _sigmoid(self.slope * score + self.intercept)

    def _fit(self) -> None:
        """A label's refit, in the exact arithmetic of the plain loops over the bins (so the
        same counts give the same floats as ever), with the per-bin constants of the fit taken
        once and the loss at an accepted step kept for the next step's line search: it runs
        after every label, at the end of a replay for thousands of sessions at once."""
        target_pos = (self.positives + 1) / (self.positives + 2)
        target_neg = 1 / (self.negatives + 2)
        width = self.BIN_WIDTH
        bins = [(k, k * width, neg + pos, pos * target_pos + neg * target_neg, neg, pos)
                for k, (neg, pos) in self.bins.items()]
        a, b = self.slope, self.intercept
        exp = math.exp
        loss = None
        for _ in range(self.NEWTON_STEPS):
            ga, gb = self.SLOPE_L2 * a, self.INTERCEPT_L2 * b                 # gradient
            haa, hab, hbb = self.SLOPE_L2, 0.0, self.INTERCEPT_L2             # Hessian
            for _k, s, n, y, _neg, _pos in bins:
                z = a * s + b  # _sigmoid(z), inline: no call per bin
                if z >= 0:
                    p = 1 / (1 + exp(-z))
                else:
                    e = exp(z)
                    p = e / (1 + e)
                g = n * p - y
                w = n * p * (1 - p)
                ga += g * s
                gb += g
                haa += w * s * s
                hab += w * s
                hbb += w
            det = haa * hbb - hab * hab
            da = min(max((hbb * ga - hab * gb) / det, -self.MAX_STEP), self.MAX_STEP)
            db = min(max((haa * gb - hab * ga) / det, -self.MAX_STEP), self.MAX_STEP)
            # Backtracking: a full step from a saturated fit (scores up to 20) can overshoot to a
            # point whose step comes straight back (it did in the demo, for thousands of labels).
            if loss is None:
                loss = self._loss(bins, a, b, target_pos, target_neg)
            t = 1.0
            while t > 1e-3 and (trial := self._loss(bins, a - t * da, b - t * db, target_pos, target_neg)) > loss:
                t /= 2
            if t > 1e-3:
                a, b, loss = a - t * da, b - t * db, trial
        self.slope, self.intercept = a, b

    def _loss(self, bins: list[tuple[int, float, int, float, int, int]], a: float, b: float,
              target_pos: float, target_neg: float) -> float:
        """The penalised cross-entropy the Newton steps minimise."""
        total = (self.SLOPE_L2 * a * a + self.INTERCEPT_L2 * b * b) / 2
        width, log1p, exp = self.BIN_WIDTH, math.log1p, math.exp
        for k, _s, _n, _y, neg, pos in bins:
            z = a * k * width + b
            tail = log1p(exp(-abs(z)))
            log_p, log_q = -(max(-z, 0.0) + tail), -(max(z, 0.0) + tail)  # log sigmoid(z), log (1 - sigmoid(z))
            total -= pos * (target_pos * log_p + (1 - target_pos) * log_q)
            total -= neg * (target_neg * log_p + (1 - target_neg) * log_q)
        return total


LEVEL_WIDTH = 0.25   # of a level feature's bins (log1p units; ratios in [0, 1] give 5 bins)
TOP_LEVEL = 8        # bins above it are one: log1p(n) >= 2, about 6.4 events and more


def encode(x: Mapping[str, float]) -> dict[str, float]:
    """The naive Bayes input from the features: the scored event's type, and four levels, each as
    one indicator of its bin ("session_items=3"): add-to-carts, distinct items, add-to-carts per
    item, product views per item.

    Why levels and ratios: on JD a session that converts has carted one of few items it looked at
    (carts per item alone ranks with ROC AUC 0.73 in hindsight, more items 0.41); presence (> 0)
    cannot say "few" or "most". Why not every feature: the others (duration, dwell, scroll,
    history, windows) rank at 0.42 to 0.53 each on JD, and as independent evidence they buried
    the signal (progressive ROC AUC 0.70 with them, 0.73 without; README "Online learning").
    """
    x = {**dict.fromkeys(FEATURE_NAMES, 0.0), **x}   # a feature missing reads as 0
    carts = math.expm1(x["session_add_to_cart"])
    items = max(math.expm1(x["session_items"]), 1.0)
    views = max(math.expm1(x["session_product_view"]), 1.0)
    z = {f"event_{t}": x[f"event_{t}"] for t in SESSION_EVENT_TYPES}
    levels = {"session_add_to_cart": x["session_add_to_cart"], "session_items": x["session_items"],
              "cart_per_item": min(carts / items, 1.0), "views_per_item": math.log1p(views / items)}
    z.update({f"{name}={min(int(v / LEVEL_WIDTH + 0.5), TOP_LEVEL)}": 1.0 for name, v in levels.items()})
    return z


class CalibratedNaiveBayes(base.Classifier):
    """Bernoulli naive Bayes over ``encode``'s indicators, its log-odds calibrated online
    (``PlattScaling``).

    Why not a logistic regression over the features, the model before: naive Bayes learns by
    counting, with no learning rate, so it ranks well after few positives and late labels. On JD
    (3,297 labelled sessions, 220 converted, labels arriving up to 30 minutes after the session's
    last event) the logistic regression's progressive ROC AUC was 0.650, below the one rule "the
    session has an add-to-cart" (0.680); this model's is 0.697. Uncalibrated naive Bayes counts
    correlated behaviours as independent evidence: its probabilities had a log loss of 1.28.
    Calibrated by a one-feature logistic regression learning by SGD it was 0.415 (2.47 in the
    demo): starting at 0.5 and taking hundreds of labels to reach a low base rate, with steps
    scaled by log-odds up to 20; refitted on every label it was 0.330. With labels at the close,
    the prior and ``encode``: ROC AUC 0.727, log loss 0.223 (README "Online learning").
    """

    ENCODING = 2   # of ``encode``: 1 (no attribute) was the raw features' presence

    def __init__(self) -> None:
        self.naive_bayes = naive_bayes.BernoulliNB(true_threshold=0.0)
        self.calibration = PlattScaling()
        self.encoding = self.ENCODING

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A model pickled with another input encoding (a snapshot file or savepoint of an
        earlier release) has counts of features this one never sees: it starts afresh, naive
        Bayes and calibration (the metrics and counters of ``Propensity`` stay)."""
        if state.get("encoding") != self.ENCODING:
            state = {**state, "naive_bayes": naive_bayes.BernoulliNB(true_threshold=0.0),
                     "calibration": PlattScaling(), "encoding": self.ENCODING}
        self.__dict__.update(state)

    # River types any features and label; this model takes the propensity features and a bool.
    def learn_one(self, x: dict[str, float], y: bool) -> None:  # type: ignore[override]
        z = encode(x)
        self.calibration.learn(self._log_odds(z), bool(y))   # on the score made before naive Bayes learns x
        self.naive_bayes.learn_one(z, y)

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:  # type: ignore[override]  # as learn_one
        p = self.calibration.predict(self._log_odds(encode(x)))
        return {False: 1 - p, True: p}

    def parameters(self) -> dict[str, Any]:
        """The learned parameters in plain numbers, for ``models export``."""
        calibration = self.calibration
        return {"naive_bayes": {"class_counts": {str(c): n for c, n in self.naive_bayes.class_counts.items()},
                                "presence_counts": {f: {str(c): n for c, n in counts.items()}
                                                    for f, counts in self.naive_bayes.feature_counts.items()}},
                "calibration": {"slope": calibration.slope, "intercept": calibration.intercept,
                                "bin_width": calibration.BIN_WIDTH,
                                "labels_per_bin": {str(k): {"False": neg, "True": pos}
                                                   for k, (neg, pos) in sorted(calibration.bins.items())}}}

    def _log_odds(self, x: dict[str, float]) -> float:
        """Naive Bayes's posterior log-odds, from its joint log-likelihoods (its own
        ``predict_proba_one`` goes through scipy's ``logsumexp``: 180 µs a call)."""
        jll = self.naive_bayes.joint_log_likelihood(x)
        if True in jll and False in jll:
            odds: float = jll[True] - jll[False]
        else:   # one class seen so far (or none): that class is certain
            odds = LOG_ODDS_LIMIT if True in jll else -LOG_ODDS_LIMIT if False in jll else 0.0
        return min(max(odds, -LOG_ODDS_LIMIT), LOG_ODDS_LIMIT)


def new_model() -> CalibratedNaiveBayes:
    return CalibratedNaiveBayes()


class Propensity:
    """The shared classifier with its progressive-validation metrics and example counters.

    Whole-run ROC AUC is River's thresholded approximation with 100 thresholds (10, the
    default, is too coarse when most probabilities sit near a low base rate); the recent
    window uses the exact ``RollingROCAUC``. ROC AUC is undefined until its examples hold both
    a positive and a negative (River then reports 0.0, which reads like a model that is always
    wrong): ``metrics`` gives None instead, and the labels of the recent window are kept to know.
    """

    def __init__(self, window: int = 1000) -> None:
        self.model = new_model()
        self.window = window
        self.roc_auc = metrics.ROCAUC(n_thresholds=100)
        self.log_loss = metrics.LogLoss()
        self.recent_roc_auc = metrics.RollingROCAUC(window_size=window)
        self.recent_log_loss = utils.Rolling(metrics.LogLoss(), window_size=window)
        self.recent_labels: deque[bool] = deque(maxlen=window)
        self.learned = 0
        self.positives = 0
        self.negatives = 0
        self.unscored = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Models pickled before ``recent_labels`` existed: the window's labels are unknown, so its
        ROC AUC reads None until the window has been refilled with both classes."""
        self.__dict__.update({"recent_labels": deque(maxlen=state["window"]), **state})

    def predict(self, x: dict[str, float]) -> float:
        return self.model.predict_proba_one(x).get(True, 0.0)

    def learn(self, x: dict[str, float], label: bool, prediction: float) -> None:
        """Score the earlier prediction, then learn: predict-before-learn by construction."""
        for metric in (self.roc_auc, self.log_loss, self.recent_roc_auc, self.recent_log_loss):
            metric.update(label, prediction)
        self.recent_labels.append(label)
        self.model.learn_one(x, label)
        self.learned += 1

    @property
    def labels(self) -> int:
        """Labelled sessions with an example; equals ``learned`` unless an example was lost."""
        return self.positives + self.negatives

    def metrics(self) -> dict[str, float | int | None]:
        """Counters and progressive metrics; a metric that is undefined (no example yet, or ROC AUC
        over examples of one class) is None."""
        recent_classes = len(set(self.recent_labels))
        return {
            "examples_learned": self.learned,
            "labels": self.labels,
            "positives": self.positives,
            "negatives": self.negatives,
            "unscored_sessions": self.unscored,
            # plain floats: River returns numpy scalars
            "roc_auc": float(self.roc_auc.get()) if self.positives and self.negatives else None,
            "log_loss": float(self.log_loss.get()) if self.learned else None,
            "recent_window": self.window,
            "recent_roc_auc": float(self.recent_roc_auc.get()) if recent_classes == 2 else None,
            "recent_log_loss": float(self.recent_log_loss.get()) if self.recent_labels else None,
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
    they were last updated, the spans already labelled, kept until no event can reach them, and
    the examples of converted sessions, kept until the session closes (then learned)."""

    pending: dict[str, Pending] = field(default_factory=dict)
    labelled: dict[str, Labelled] = field(default_factory=dict)
    converted: dict[str, Pending] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.pending or self.labelled or self.converted)


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


class SessionSpan(Protocol):
    """What the label bookkeeping reads of a session: a ``SessionSummary``, or the trainer's ``Span``."""

    @property
    def session_id(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def converted(self) -> bool: ...


def on_event(model: Propensity, state: LabelState, session: SessionSpan, x: dict[str, float],
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
        state.labelled[session.session_id] = Labelled(session.start, session.end, True)
        example = _consume(state, session)
        if example is None:
            model.unscored += 1
        else:
            state.converted[session.session_id] = example   # learned when the session closes
        return Score(1.0, True, None)
    prediction = model.predict(x)
    state.pending.pop(session.session_id, None)   # re-insert: the dict order is the update order
    state.pending[session.session_id] = Pending(ts, x, prediction, question)
    return Score(prediction, False, None)


def on_session(model: Propensity, state: LabelState, summary: SessionSpan) -> Learned | None:
    """Handle one session emission (closed, updated or retracted) from ``sessions.advance``."""
    if summary.status == "retracted":
        return None   # its events belong to a session that will be emitted under another id
    prior = _label_of(state, summary)
    if prior is None:
        return _label(model, state, summary, summary.converted)
    _consume(state, summary)
    state.labelled[summary.session_id] = Labelled(summary.start, summary.end, prior)
    inside = [sid for sid, p in state.converted.items() if summary.start <= p.ts <= summary.end]
    if not inside:
        return None
    example = [state.converted.pop(sid) for sid in inside][-1]
    return _learn(model, summary.session_id, True, example)


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


def _label_of(state: LabelState, session: SessionSpan) -> bool | None:
    """The label of a labelled span overlapping this session, if any."""
    for span in state.labelled.values():
        if span.start <= session.end and session.start <= span.end:
            return span.label
    return None


def _consume(state: LabelState, session: SessionSpan) -> Pending | None:
    """Remove the pending examples inside the session; return the one updated last."""
    inside = [sid for sid, p in state.pending.items() if session.start <= p.ts <= session.end]
    consumed = [state.pending.pop(sid) for sid in inside]
    return consumed[-1] if consumed else None


def _label(model: Propensity, state: LabelState, session: SessionSpan, label: bool) -> Learned | None:
    state.labelled[session.session_id] = Labelled(session.start, session.end, label)
    example = _consume(state, session)
    if example is None:
        model.unscored += 1
        return None
    return _learn(model, session.session_id, label, example)


def _learn(model: Propensity, session_id: str, label: bool, example: Pending) -> Learned:
    if label:
        model.positives += 1
    else:
        model.negatives += 1
    model.learn(example.x, label, example.prediction)
    return Learned(session_id, label, example.x, example.prediction, example.question)
