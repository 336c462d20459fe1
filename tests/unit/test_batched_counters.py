"""The user operator's counters reach Flink in batches, and nothing counted is lost."""

from __future__ import annotations

from personalization.operators.counters import BatchedCounters


class CountingCounter:
    """What Flink's counter would hold, and how many calls (into the JVM, in the job) it took."""

    def __init__(self) -> None:
        self.count, self.calls = 0, 0

    def inc(self, n: int = 1) -> None:
        self.count += n
        self.calls += 1


class CountingGroup:
    """The one method of a Flink metric group the counters use."""

    def __init__(self) -> None:
        self.counters: dict[str, CountingCounter] = {}

    def counter(self, name: str) -> CountingCounter:
        return self.counters.setdefault(name, CountingCounter())


def test_counts_reach_flink_in_one_call_per_counter_and_push():
    group = CountingGroup()
    counts = BatchedCounters(group, ["a", "b", "c"])
    for _ in range(1_000):
        counts.inc("a")
    counts.inc("b", 7)
    assert counts.pending and group.counters["a"].count == 0  # nothing handed over yet
    counts.push()
    assert {name: c.count for name, c in group.counters.items()} == {"a": 1_000, "b": 7, "c": 0}
    assert {name: c.calls for name, c in group.counters.items()} == {"a": 1, "b": 1, "c": 0}
    assert not counts.pending
    counts.push()  # nothing new: no call
    counts.inc("c")
    counts.push()
    assert {name: (c.count, c.calls) for name, c in group.counters.items()} == {"a": (1_000, 1), "b": (7, 1),
                                                                                "c": (1, 1)}
