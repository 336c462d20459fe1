"""The read-through cache in front of keyed state: reads after a write never reach the state."""

from personalization.state.cached import CachedValueState


class OneKeyState:
    """Stands in for the ValueState of the current key: counts the reads that reach it."""

    def __init__(self) -> None:
        self.stored, self.reads = None, 0

    def value(self):
        self.reads += 1
        return self.stored

    def update(self, value) -> None:
        self.stored = value


def test_the_object_written_is_read_back_without_reaching_the_state():
    state = OneKeyState()
    cached = CachedValueState(state, capacity=10)
    written = {"events": 1}
    cached.update("ann", written)
    assert cached.value("ann") is written and state.reads == 0
    assert state.stored is written  # written through at once: the next checkpoint has it


def test_a_forgotten_or_evicted_key_is_read_from_the_state():
    state = OneKeyState()
    cached = CachedValueState(state, capacity=2)
    cached.update("ann", "a1")
    cached.forget("ann")
    state.stored = "a0"  # what the state holds when the caller changed the object without writing it
    assert cached.value("ann") == "a0" and state.reads == 1
    cached.update("ben", "b1")
    cached.value("ann")  # ann is now the most recently used; ben the least
    cached.update("cid", "c1")  # over capacity: ben is evicted
    state.stored = "from-state"
    assert cached.value("ann") == "a0" and cached.value("ben") == "from-state"
    assert cached.value("missing-key-reads-state") == "from-state"


def test_with_a_ttl_an_object_written_longer_ago_is_read_from_the_state():
    """Flink expires the state (profile.state_ttl); the cache must not keep the user alive."""
    now = [100.0]
    state = OneKeyState()
    cached = CachedValueState(state, capacity=10, ttl_ms=4_000, clock=lambda: now[0])
    cached.update("ann", "a1")
    now[0] += 3.9
    assert cached.value("ann") == "a1" and state.reads == 0
    now[0] += 0.1  # 4 s after the write: Flink no longer returns it
    state.stored = None
    assert cached.value("ann") is None and state.reads == 1
    cached.update("ann", "a2")  # a write starts the TTL again
    now[0] += 3.9
    assert cached.value("ann") == "a2" and state.reads == 1
