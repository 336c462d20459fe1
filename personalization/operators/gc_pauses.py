"""Short garbage-collection pauses for the Python that runs the operators.

CPython's full (generation 2) collection walks every object the collector tracks, with the
interpreter stopped; in thread mode that stops every Python task of the TaskManager. The
live-state cache holds about 40 tracked objects per user (windows, buckets, sessions), so the
pause grows with the users cached. Measured in the embedded interpreter at 335 events/s: full
collections every 2-6 s, 44 ms at 150,000 objects (the libraries alone), 296 ms at 406,000
(docs/performance.md "Garbage-collection pauses").

After each full collection the objects that survived it are frozen (``gc.freeze``): later full
collections walk only what has survived since, and objects freed by their reference count
(most are: the states are trees) are freed whether frozen or not. What freezing gives up is
reclaiming *cycles* among frozen objects, so every ``full_every`` the frozen objects are
unfrozen and the next full collection walks them all once, logging what it reclaimed.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

class FreezeSurvivors:
    """A ``gc.callbacks`` entry: freeze the survivors of each full collection, unfreeze every
    ``full_every_ms`` so one full collection walks everything."""

    def __init__(self, full_every_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._full_every_s = full_every_ms / 1000
        self._clock = clock
        self._unfrozen_at = clock()
        self._walk_all = False  # the next full collection walks the unfrozen objects
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._walk_all:
            self._walk_all = False
            log.info("full garbage collection over every object: %d unreachable reclaimed in %.0f ms",
                     info["collected"], (time.perf_counter() - self._started) * 1000)
        now = self._clock()
        if now - self._unfrozen_at >= self._full_every_s:
            gc.unfreeze()
            self._unfrozen_at, self._walk_all = now, True
        else:
            gc.freeze()


def bound_gc_pauses(full_every_ms: int) -> None:
    """Install ``FreezeSurvivors`` in this interpreter unless it is there already (whichever operator
    opens first; ``full_every_ms`` 0: leave CPython's collector as it is)."""
    if full_every_ms and not any(isinstance(callback, FreezeSurvivors) for callback in gc.callbacks):
        gc.callbacks.append(FreezeSurvivors(full_every_ms))
