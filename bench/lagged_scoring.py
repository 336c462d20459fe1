"""What scoring with a lagging model would cost the propensity model (issue 26, point 4):
``.venv/bin/python -m bench.lagged_scoring``.

Scoring in the user tasks, from a model snapshot the trainer sends them, would take the per-event
trip to the one trainer task away. The price: an event is scored by the model as it was some time
before, not by the model of that very moment. This replays the job's learning in plain Python
(``tools.propensity_quality``), notes when (in event time) each learned example's question was
asked, and scores every question again with the model as of the newest snapshot at least ``lag``
before it, snapshots being taken every ``epoch`` of event time, each having learned every label
up to its time. With no lag and a 1 ms epoch the predictions are the job's to the bit (the check
that the replay is the job's, ``tests/unit/test_bench_lagged_scoring.py``). Writes
``bench/results/lagged-scoring.md``.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Iterable
from typing import Any

import click

from bench.run import RESULTS
from personalization.config.settings import load_settings
from personalization.core.durations import parse_duration_ms
from personalization.core.learning.evaluation import against_baselines, log_loss_against_baselines
from personalization.core.learning.feed import EventRecord
from personalization.core.learning.propensity import FEATURE_NAMES, Propensity
from personalization.core.learning.trainer import Outputs, Trainer
from personalization.tools.propensity_quality import REPLAYS, learned_examples
from personalization.wiring import new_models, trainer_rules


class TimedTrainer(Trainer):
    """The trainer, noting when (event time) the question of each number was asked. An event
    that asks no question leaves its number to the next one, which overwrites the time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked_at: dict[int, int] = {}

    def _event(self, record: EventRecord, out: Outputs) -> None:
        self.asked_at[self.questions + 1] = record.time
        super()._event(record, out)


def timed_examples(events: Iterable[dict]) -> tuple[list[dict], dict[int, int], Propensity]:
    """The examples learned from ``events``, when each question was asked, and a fresh model of
    the job's configuration (what the snapshots start from)."""
    settings = load_settings()
    trainer = TimedTrainer(trainer_rules(settings), new_models(settings))
    examples = learned_examples(events, settings, trainer)
    return examples, trainer.asked_at, new_models(settings).propensity


def lagged_predictions(examples: list[dict], asked_at: dict[int, int], fresh: Propensity,
                       lag_ms: int, epoch_ms: int) -> list[float]:
    """Per example (in learning order), the prediction of the model as of the newest epoch
    boundary at or before ``question time - lag_ms``: the model that learned, in learning order,
    every example whose label came (``event_time``) at or before that boundary."""
    in_order = sorted(examples, key=lambda e: e["seq"])
    times = [e["event_time"] for e in in_order]
    if times != sorted(times):
        raise ValueError("the examples were not learned in event-time order: snapshots by time would differ")
    as_of = [(asked_at[e["question"]] - lag_ms) // epoch_ms * epoch_ms for e in in_order]
    model, learned = copy.deepcopy(fresh), 0
    predictions = [0.0] * len(in_order)
    for i in sorted(range(len(in_order)), key=as_of.__getitem__):   # each question once its snapshot is due
        while learned < len(in_order) and in_order[learned]["event_time"] <= as_of[i]:
            e = in_order[learned]
            model.learn(dict(zip(FEATURE_NAMES, e["x"])), e["label"], e["prediction"])
            learned += 1
        predictions[i] = model.predict(dict(zip(FEATURE_NAMES, in_order[i]["x"])))
    return predictions


def quality(examples: list[dict], predictions: list[float]) -> dict[str, float]:
    """Progressive ROC AUC and log loss of ``predictions`` (in learning order) over the examples."""
    rescored = [{**e, "prediction": p} for e, p in zip(sorted(examples, key=lambda e: e["seq"]), predictions)]
    return {"roc_auc": against_baselines(rescored)["model"], "log_loss": log_loss_against_baselines(rescored)["model"]}


@click.command()
@click.option("--replay", "names", type=click.Choice(list(REPLAYS)), multiple=True, default=["jd", "synthetic"],
              show_default=True, help="Replays to measure (repeatable).")
@click.option("--lag", "lags", multiple=True, default=["1m", "5m", "15m", "1h"], show_default=True,
              help="How long before its question the scoring model is (repeatable; a duration).")
@click.option("--epoch", default="1m", show_default=True, help="Event time between two snapshots.")
def main(names: tuple[str, ...], lags: tuple[str, ...], epoch: str) -> None:
    """The propensity model's progressive quality when every question is scored by a lagging snapshot."""
    epoch_ms = parse_duration_ms(epoch)
    lines = ["# Scoring with a lagging model snapshot", "",
             f"Machine: {platform.machine()}, Python {platform.python_version()}. Command: "
             f"`.venv/bin/python -m bench.lagged_scoring` ({', '.join(names)}; snapshots every {epoch} of event time).",
             "", "| replay | labelled (converted) | scored by | ROC AUC | log loss |", "|---|---|---|---|---|"]
    for name in names:
        examples, asked_at, fresh = timed_examples(REPLAYS[name].events())
        positives = sum(e["label"] for e in examples)
        rows = [("the model of the moment (the job today)", quality(examples, [e["prediction"] for e in
                                                                          sorted(examples, key=lambda e: e["seq"])]))]
        rows += [(f"a snapshot >= {lag} old", quality(examples, lagged_predictions(
            examples, asked_at, fresh, parse_duration_ms(lag), epoch_ms))) for lag in lags]
        for scored_by, q in rows:
            lines.append(f"| {name} | {len(examples):,} ({positives:,}) | {scored_by} | {q['roc_auc']:.4f} "
                         f"| {q['log_loss']:.4f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lagged-scoring.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
