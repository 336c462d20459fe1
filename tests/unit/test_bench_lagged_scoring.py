"""The lagged-scoring bench (``bench/lagged_scoring.py``): its replay is the job's learning, so
with no lag its snapshots give the job's very predictions, and a lag changes them."""

from __future__ import annotations

from bench.lagged_scoring import lagged_predictions, timed_examples
from personalization.replay.producer import replay_events

MINUTE = 60_000


def test_no_lag_gives_the_jobs_predictions_and_a_lag_changes_them():
    examples, asked_at, fresh = timed_examples(replay_events("synthetic", augmented=False, seed=7, limit=6_000))
    assert sum(e["label"] for e in examples) > 10 and len(examples) > 100
    in_order = sorted(examples, key=lambda e: e["seq"])
    assert lagged_predictions(examples, asked_at, fresh, 0, 1) == [e["prediction"] for e in in_order]
    lagged = lagged_predictions(examples, asked_at, fresh, 30 * MINUTE, MINUTE)
    assert sum(a != e["prediction"] for a, e in zip(lagged, in_order)) > len(in_order) // 10
