"""Metric counters counted in Python and handed to Flink in batches.

In thread mode every ``Counter.inc()`` is a call into the JVM, and the user operator counts
three or four things per event (docs/performance.md, "Fewer calls into the JVM per step"). Its
per-event counters are counted here and added to Flink's counters, one call per counter, when
the operator pushes them (from a processing-time timer, ``COUNTS_PUSH_MS`` after the first
count not pushed yet, and at ``close()``).
"""

from __future__ import annotations

from collections.abc import Iterable

from pyflink.metrics import MetricGroup

COUNTS_PUSH_MS = 100  # how far the Flink counters may lag what was counted


class BatchedCounters:
    def __init__(self, group: MetricGroup, names: Iterable[str]) -> None:
        self._counters = {name: group.counter(name) for name in names}
        self._counts = dict.fromkeys(self._counters, 0)
        self.pending = False  # counted and not pushed yet

    def inc(self, name: str, n: int = 1) -> None:
        self._counts[name] += n
        self.pending = True

    def push(self) -> None:
        """Add what was counted since the last push to the Flink counters."""
        if not self.pending:
            return
        for name, n in self._counts.items():
            if n:
                self._counters[name].inc(n)
                self._counts[name] = 0
        self.pending = False
