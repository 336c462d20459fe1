"""The embedded interpreter's collection policy (operators.gc_pauses), on this process's collector."""

import gc
import logging
import weakref

import pytest

from personalization.operators.gc_pauses import FreezeSurvivors


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can reclaim it


@pytest.fixture
def clock():
    now = [0.0]
    yield now
    gc.unfreeze()  # leave this process's collector as it was


def installed(policy: FreezeSurvivors):
    gc.callbacks.append(policy)
    return policy


def test_the_survivors_of_a_full_collection_are_frozen(clock):
    policy = installed(FreezeSurvivors(3_600_000, clock=lambda: clock[0]))
    try:
        gc.unfreeze()
        gc.collect()
        assert gc.get_freeze_count() > 0
        survivor = Node()
        gc.collect()
        frozen = gc.get_freeze_count()
        gc.collect()  # nothing new survived: the frozen count stays
        assert gc.get_freeze_count() == frozen
        assert survivor.me is survivor
    finally:
        gc.callbacks.remove(policy)


def test_a_cycle_of_frozen_objects_is_reclaimed_once_the_period_has_passed(clock, caplog):
    policy = installed(FreezeSurvivors(60_000, clock=lambda: clock[0]))
    try:
        cycle = Node()
        alive = weakref.ref(cycle)
        gc.collect()  # the cycle survives it: frozen
        del cycle
        gc.collect()
        assert alive() is not None, "a frozen cycle is not walked before the period has passed"
        clock[0] = 60.0
        gc.collect()  # the first full collection after the period: unfreezes
        with caplog.at_level(logging.INFO, logger="personalization.operators.gc_pauses"):
            gc.collect()  # walks every object once
        assert alive() is None
        assert any("full garbage collection over every object" in r.getMessage() for r in caplog.records)
        assert gc.get_freeze_count() > 0, "and freezes the survivors again"
    finally:
        gc.callbacks.remove(policy)
