"""The trainer's progressive validation, replayed by River itself: an offline check of the examples.

Input: the learned examples as the trainer emits them (the ``examples`` topic: ``seq``,
``question``, ``questions_asked``, ``x``, ``label``, ``prediction``). Each example's question
was asked (its prediction made) at the event numbered ``question``; its answer (the label) was
revealed when ``questions_asked`` questions had been asked, and answers are revealed in ``seq``
order. ``river.evaluate.iter_progressive_val_score`` over the examples in question order, with
each label delayed to just that moment, predicts with a fresh model exactly what the trainer
predicted (the parity tests hold it to 1e-9).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from fractions import Fraction
from typing import Any

from river import base, evaluate, metrics

from personalization.core.learning.propensity import FEATURE_NAMES, new_model


def label_delays(by_question: list[dict[str, Any]]) -> list[Fraction]:
    """Per example (in question order), how many steps after its question its label arrives:
    after the ``j``-th question, where ``j`` questions had been asked when it was learned, and
    between two questions in learning order (``seq``)."""
    questions = [e["question"] for e in by_question]
    n = len(by_question)
    delays = []
    for i, e in enumerate(by_question):
        j = sum(q <= e["questions_asked"] for q in questions)   # questions asked before the answer
        delays.append(Fraction(j - 1) + Fraction(e["seq"], n + 2) - i)
    return delays


class BaseRate(base.Classifier):
    """The constant baseline, learned the same way: the share of positives among the labels
    learned so far (0.5 before the first)."""

    def __init__(self) -> None:
        self.labels = 0
        self.positives = 0

    def learn_one(self, x: dict[Hashable, Any], y: base.typing.ClfTarget) -> None:
        self.labels += 1
        self.positives += bool(y)

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[base.typing.ClfTarget, float]:
        p = self.positives / self.labels if self.labels else 0.5
        return {False: 1 - p, True: p}


def river_predictions(examples: Iterable[dict[str, Any]], metric: metrics.base.Metric | None = None,
                      model: base.Classifier | None = None) -> list[float]:
    """River's progressive predictions P(purchase) for ``examples``, in learning (``seq``) order,
    of a fresh propensity model (or of ``model``)."""
    by_question = sorted(examples, key=lambda e: e["question"])
    delays = iter(label_delays(by_question))
    steps = evaluate.iter_progressive_val_score(
        dataset=[(dict(zip(FEATURE_NAMES, e["x"])), e["label"]) for e in by_question],
        model=new_model() if model is None else model,
        metric=metric or metrics.ROCAUC(n_thresholds=100), delay=lambda _x, _y: next(delays), step=1,
        yield_predictions=True)
    return [s["Prediction"][True] for s in steps]


def progressive_auc(examples: list[dict[str, Any]], scores: Iterable[float]) -> float:
    """ROC AUC as the trainer computes it (River, 100 thresholds) of ``scores``, one per example
    in learning (``seq``) order: with the examples' own predictions, the job's whole-run figure."""
    metric = metrics.ROCAUC(n_thresholds=100)
    for example, score in zip(examples, scores, strict=True):
        metric.update(example["label"], score)
    return float(metric.get())


def against_baselines(examples: list[dict[str, Any]]) -> dict[str, float]:
    """The model's progressive ROC AUC beside two baselines over the same examples: a constant
    predictor, and the one rule "the session has an add-to-cart" (1, else 0) at the same event."""
    examples = sorted(examples, key=lambda e: e["seq"])
    cart = FEATURE_NAMES.index("session_add_to_cart")
    return {
        "model": progressive_auc(examples, (e["prediction"] for e in examples)),
        "constant": progressive_auc(examples, (0.5 for _ in examples)),
        "has_add_to_cart": progressive_auc(examples, (float(e["x"][cart] > 0) for e in examples)),
    }


def progressive_log_loss(examples: list[dict[str, Any]], scores: Iterable[float]) -> float:
    """Log loss as the trainer computes it (River) of ``scores``, one per example in ``seq`` order."""
    metric = metrics.LogLoss()
    for example, score in zip(examples, scores, strict=True):
        metric.update(example["label"], score)
    return float(metric.get())


def log_loss_against_baselines(examples: list[dict[str, Any]]) -> dict[str, float]:
    """The model's progressive log loss beside the constant predictor of the base rate, over the
    same examples: ``base_rate`` learned progressively with the same label delays (the bar), and
    ``base_rate_hindsight``, the whole run's rate, which no online predictor knows in advance
    (the entropy of the labels: the figure to approach)."""
    examples = sorted(examples, key=lambda e: e["seq"])
    rate = sum(e["label"] for e in examples) / len(examples)
    return {
        "model": progressive_log_loss(examples, (e["prediction"] for e in examples)),
        "base_rate": progressive_log_loss(examples, river_predictions(examples, model=BaseRate())),
        "base_rate_hindsight": -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate)) if 0 < rate < 1 else 0.0,
    }
