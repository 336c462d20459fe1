"""The propensity model's progressive quality on a replay, measured in plain Python, in a minute.

The user logic with its learning feed and the trainer (``core.learning.trainer``) run here as
the job runs them at parallelism 1: the trainer processes records in its canonical order once
the watermark passes them, so what it learns and every prediction are the job's, whatever the
arrival order or watermark steps (``tests/unit/test_learning_trainer.py``). No Kafka, no Flink:
the quick way to compare a model change on the datasets the demo and the tests replay.

    pz models quality               # all replays below
    pz models quality --replay jd
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import click
from rich.console import Console
from rich.table import Table

from personalization.config.rules import load_rules
from personalization.config.settings import Settings, load_settings
from personalization.core.events import Event
from personalization.core.learning.evaluation import against_baselines, log_loss_against_baselines
from personalization.core.learning.feed import encode
from personalization.core.learning.trainer import Trainer
from personalization.core.user import END_OF_INPUT, Outcome, UserState
from personalization.wiring import trainer_rules, user_logic
from personalization.replay.producer import replay_events

ADVANCE_EVERY = 50   # events between watermark steps (the trainer's results do not depend on it)


@dataclass(frozen=True, slots=True)
class Replay:
    """A replay as the demo or the tests send it (``replay_events`` arguments)."""

    dataset: str
    limit: int | None
    augmented: bool
    seed: int = 7
    user_share: float = 1.0

    def events(self) -> Iterator[dict]:
        return replay_events(self.dataset, seed=self.seed, augmented=self.augmented, limit=self.limit,
                             user_share=self.user_share)


REPLAYS = {
    "jd": Replay("jd", None, augmented=False),                        # the quality claims (test_propensity_quality.py)
    "taobao-6k": Replay("taobao", 6_000, augmented=True),             # test_learning.py reads its slice here
    "demo": Replay("all", 20_000, augmented=True, user_share=0.2),    # make demo (its defaults)
    "synthetic": Replay("synthetic", 100_000, augmented=False),       # the tests' synthetic replay
}


def learned_examples(events: Iterable[dict], settings: Settings | None = None,
                     trainer: Trainer | None = None) -> list[dict]:
    """Every example the trainer learns from ``events`` (as the ``examples`` topic holds them);
    ``trainer``: one to feed instead of a new one of the settings (a bench's, that notes more)."""
    settings = settings or load_settings()
    logic = user_logic(settings, load_rules(settings))
    trainer = trainer or Trainer(trainer_rules(settings))
    users: dict[str, UserState] = {}
    timers: dict[str, int] = {}
    examples: list[dict] = []

    def take(user: str, result) -> None:
        for record in result.learning:
            examples.extend(trainer.receive(encode(record)).examples)
        if result.next_timer is not None:
            timers[user] = result.next_timer

    def advance(watermark: int) -> None:
        for user in sorted(u for u, due in timers.items() if due <= watermark):
            del timers[user]
            take(user, logic.on_timer(users[user], watermark))
        examples.extend(trainer.advance(watermark).examples)

    newest = 0
    for i, payload in enumerate(events):
        event = Event.from_payload(payload)
        newest = max(newest, event.ts)
        watermark = newest - settings.time.out_of_orderness - 1
        state = users.setdefault(event.user_id, logic.new_state(event.user_id))
        result = logic.on_event(state, event, watermark)
        if result.outcome is Outcome.PROCESSED:
            take(event.user_id, result)
        if i % ADVANCE_EVERY == 0:
            advance(watermark)
    timers.update((user, END_OF_INPUT) for user in users)
    advance(END_OF_INPUT)
    return examples


def measure(replay: Replay) -> dict[str, float | int]:
    """Progressive log loss and ROC AUC of the model beside their baselines on one replay."""
    examples = learned_examples(replay.events())
    auc = against_baselines(examples)
    log_loss = log_loss_against_baselines(examples)
    return {"examples": len(examples), "positives": sum(e["label"] for e in examples),
            "log_loss": log_loss["model"], "log_loss_base_rate": log_loss["base_rate"],
            "log_loss_hindsight": log_loss["base_rate_hindsight"],
            "roc_auc": auc["model"], "roc_auc_add_to_cart": auc["has_add_to_cart"]}


@click.command()
@click.option("--replay", "names", type=click.Choice(list(REPLAYS)), multiple=True,
              help="Replays to measure (default: all).")
def main(names: tuple[str, ...]) -> None:
    """The propensity model's progressive log loss and ROC AUC on replays, against baselines."""
    table = Table(title="propensity, progressive validation (plain-Python replay of the job's learning)")
    for column in ("replay", "labelled (converted)", "log loss", "base rate, progressive", "base rate, hindsight",
                   "ROC AUC", "has add-to-cart"):
        table.add_column(column, justify="left" if column == "replay" else "right")
    for name in names or REPLAYS:
        m = measure(REPLAYS[name])
        table.add_row(name, f"{m['examples']:,} ({m['positives']:,})", f"{m['log_loss']:.3f}",
                      f"{m['log_loss_base_rate']:.3f}", f"{m['log_loss_hindsight']:.3f}",
                      f"{m['roc_auc']:.3f}", f"{m['roc_auc_add_to_cart']:.3f}")
    Console().print(table)
