"""Experiment exposures for a replay: what a site running the experiments would have sent.

The datasets hold no experiment, so a replay adds, before a user's first event while an
experiment runs, the ``exposure`` event of the variant the user is assigned (the same pure
function the job and the API use, ``Experiment.variant_of``). Only experiments without an
audience: a replay cannot know segments, the job decides them.

Revenue: the datasets' purchases carry no price, so a purchase of an exposed user gets the item's
stable synthetic list price (``synthetic.item_price``), quantity 1.

``planted`` tests the statistics end to end: each user exposed to that experiment's variant
buys once more, with the given probability (seeded per user), a minute after the exposure.
Nothing else in the stream depends on the variant, so an A/A experiment must come out even.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from personalization.core.experiments import EXPOSURE, Experiment
from personalization.replay.datasets import EventDict
from personalization.replay.synthetic import item_price

PLANTED_DELAY_MS = 60_000


class Planted(NamedTuple):
    """An effect put into the replay: ``variant`` of ``experiment`` converts more."""

    experiment: str
    variant: str
    extra_purchase_p: float
    seed: int = 0


def with_exposures(events: Iterable[EventDict], experiments: Sequence[Experiment],
                   planted: Planted | None = None) -> Iterator[EventDict]:
    """``events`` (sorted by time) with the exposures, priced purchases and planted purchases
    (held until the input passes their time, so sorted input stays sorted)."""
    running = [e for e in experiments if e.audience is None]
    exposed: set[tuple[str, str]] = set()
    pending: list[tuple[int, int, EventDict]] = []
    order = itertools.count()
    for event in events:
        while pending and pending[0][0] <= event["ts"]:
            yield heapq.heappop(pending)[2]
        user = event.get("user_id")
        if user is None:  # anonymous: the site cannot assign before it knows the user
            yield event
            continue
        for experiment in running:
            if (experiment.name, user) not in exposed and experiment.start <= event["ts"] < experiment.end:
                exposed.add((experiment.name, user))
                exposure = _exposure(event, experiment)
                yield exposure
                extra = _planted(exposure, planted)
                if extra is not None:
                    heapq.heappush(pending, (extra["ts"], next(order), extra))
        if event["event_type"] == "purchase" and "price" not in event and "item_id" in event and any(
                (e.name, user) in exposed for e in running):
            event = {**event, "price": item_price(event["item_id"]), "quantity": 1}
        yield event
    while pending:
        yield heapq.heappop(pending)[2]


def _exposure(event: EventDict, experiment: Experiment) -> EventDict:
    return {"schema_version": 1, "event_id": f"exp-{experiment.name}-{event['event_id']}", "event_type": EXPOSURE,
            "ts": event["ts"], "user_id": event["user_id"], "experiment": experiment.name,
            "variant": experiment.variant_of(event["user_id"]), "source": "synthetic"}


def _planted(exposure: EventDict, planted: Planted | None) -> EventDict | None:
    if planted is None or (exposure["experiment"], exposure["variant"]) != (planted.experiment, planted.variant):
        return None
    if random.Random(f"{planted.seed}/planted/{exposure['user_id']}").random() >= planted.extra_purchase_p:
        return None
    item = f"planted-{exposure['experiment']}"
    return {"schema_version": 1, "event_id": f"planted-{exposure['event_id']}", "event_type": "purchase",
            "ts": exposure["ts"] + PLANTED_DELAY_MS, "user_id": exposure["user_id"], "item_id": item,
            "price": item_price(item), "quantity": 1, "source": "synthetic"}
