"""Bounded out-of-order arrival, to prove that results do not depend on arrival order.

Each event gets a random integer delay ``d`` in ``[0, max_displacement_ms)`` and
events arrive in order of ``ts + d`` (random tie-break). If ``x`` arrives before
``e`` then ``x.ts <= x.ts + d_x <= e.ts + d_e < e.ts + max_displacement_ms``: no
event is overtaken by one ``max_displacement_ms`` or more later in event time.

With ``max_displacement_ms`` at most the job's bounded out-of-orderness, no event
falls behind a watermark ``max_ts - bound``, so none is late. Integer delays keep
the bound exact at epoch-millisecond magnitudes, where float sums would round.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from personalization.replay.datasets import EventDict


def bounded_shuffle(events: Iterable[EventDict], max_displacement_ms: int, seed: int) -> list[EventDict]:
    """The same events in a seeded arrival order with event-time displacement ``< max_displacement_ms``.

    The input need not be sorted; it is materialised in memory.
    """
    if max_displacement_ms < 1:
        raise ValueError(f"max_displacement_ms must be >= 1, got {max_displacement_ms}")
    rng = random.Random(seed)
    keyed = [(event["ts"] + rng.randrange(max_displacement_ms), rng.random(), event) for event in events]
    keyed.sort(key=lambda entry: entry[:2])
    return [event for _, _, event in keyed]
