"""SharedModels: snapshot/restore round trip, snapshot files (export, start from, roll back), bounded size."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
import river

from personalization.core.learning.clusters import profile_features
from personalization.core.learning.propensity import Propensity, features
from personalization.core.learning.shared import (
    MAGIC,
    SharedModels,
    SnapshotError,
    export_snapshot,
    import_snapshot,
    list_snapshots,
    read_header,
)


def stream(seed: int, n: int) -> list[tuple[dict, bool, dict, str, int]]:
    """(propensity features, label, profile features, category, event time) per step."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.random() < 0.3
        x = features(event_type=rng.choice(("page_view", "add_to_cart")),
                     session_counts={"page_view": rng.randrange(10), "add_to_cart": rng.randrange(3) + 2 * label},
                     session_duration_ms=rng.randrange(10**6), session_max_scroll_depth=rng.random(),
                     session_dwell_ms=rng.randrange(10**5), session_items=rng.randrange(5),
                     session_categories=rng.randrange(3), lifetime_purchases=rng.randrange(4),
                     sessions_closed=rng.randrange(20), events_1h=rng.randrange(30), events_24h=rng.randrange(100))
        profile = profile_features(counts={"page_view": rng.randrange(1, 50), "purchase": rng.randrange(3)},
                                   sessions_closed=rng.randrange(1, 9), sessions_converted=rng.randrange(2),
                                   dwell_ms=rng.randrange(10**6), max_scroll_depth=rng.random())
        out.append((x, label, profile, f"c{rng.randrange(300)}", 1_000 * i))
    return out


def feed(models: SharedModels, steps) -> list[tuple[float, int]]:
    """Predict, learn, assign a cluster and count a category per step, as the operator would."""
    out = []
    for x, label, profile, category, ts in steps:
        prediction = models.propensity.predict(x)
        models.propensity.learn(x, label, prediction)
        out.append((prediction, models.clusters.assign(profile)))
        models.trending.add(category, ts)
    return out


def trained(n: int = 2_000) -> SharedModels:
    models = SharedModels()
    feed(models, stream(1, n))
    return models


def test_restore_continues_exactly_like_the_original() -> None:
    original = trained()
    copy = SharedModels.restore(original.snapshot())
    later = stream(2, 500)
    assert feed(copy, later) == feed(original, later)
    assert copy.metrics() == original.metrics()
    assert copy.trending.top(10) == original.trending.top(10)


def test_restore_rejects_bytes_that_are_not_shared_models() -> None:
    with pytest.raises(TypeError, match="SharedModels"):
        SharedModels.restore(pickle.dumps({"not": "models"}))


def test_metrics_are_plain_numbers_over_the_whole_run_and_the_recent_window() -> None:
    metrics = trained().propensity.metrics()
    assert set(metrics) == {"examples_learned", "labels", "positives", "negatives", "unscored_sessions",
                            "roc_auc", "log_loss", "recent_window", "recent_roc_auc", "recent_log_loss"}
    assert metrics["examples_learned"] == 2_000 and metrics["recent_window"] == 1_000
    assert json.loads(json.dumps(metrics)) == metrics
    assert 0.5 < metrics["recent_roc_auc"] <= 1 and metrics["log_loss"] < 0.69   # it learns the planted signal


def _learn(model: Propensity, labels: list[bool]) -> None:
    for label in labels:
        if label:
            model.positives += 1
        else:
            model.negatives += 1
        model.learn({"f": 1.0}, label, 0.1)


def test_roc_auc_over_examples_of_one_class_is_none_not_zero() -> None:
    """River reports 0.0 for a window without a positive ("0.0000" in the demo, read as a model
    that is always wrong): undefined metrics are None, and the demo prints them as n/a."""
    model = Propensity(window=3)
    assert {k: v for k, v in model.metrics().items() if k.endswith(("auc", "loss"))} == dict.fromkeys(
        ("roc_auc", "log_loss", "recent_roc_auc", "recent_log_loss"))
    _learn(model, [False, False])
    metrics = model.metrics()
    assert metrics["roc_auc"] is None and metrics["recent_roc_auc"] is None
    assert metrics["log_loss"] > 0 and metrics["recent_log_loss"] > 0   # defined over one class
    _learn(model, [True])
    assert model.metrics()["roc_auc"] is not None and model.metrics()["recent_roc_auc"] is not None
    _learn(model, [False, False, False])   # the positive left the window of 3, not the whole run
    assert model.metrics()["roc_auc"] is not None and model.metrics()["recent_roc_auc"] is None


def test_models_pickled_before_the_recent_labels_restore() -> None:
    model = Propensity(window=3)
    _learn(model, [True, False])
    state = dict(model.__dict__)
    del state["recent_labels"]
    old = Propensity.__new__(Propensity)
    old.__setstate__(state)
    assert old.metrics()["recent_roc_auc"] is None   # unknown until the window refills
    _learn(old, [True, False])
    assert old.metrics()["recent_roc_auc"] is not None and old.recent_labels.maxlen == 3


def test_export_import_and_roll_back(tmp_path) -> None:
    models = trained(1_000)
    old = export_snapshot(models, tmp_path, created_at=1_000_000)
    feed(models, stream(3, 1_000))
    new = export_snapshot(models, tmp_path, created_at=2_000_000)

    menu = list_snapshots(tmp_path)
    assert [path for path, _ in menu] == [old, new]
    header = menu[0][1]
    assert (header["created_at"], header["examples_learned"], header["river"]) == (1_000_000, 1_000, river.__version__)
    assert header["metrics"] == trained(1_000).propensity.metrics()
    assert read_header(new)["examples_learned"] == 2_000

    rolled_back = import_snapshot(old)                     # start from / roll back to the older one
    reference = trained(1_000)
    later = stream(4, 200)
    assert feed(rolled_back, later) == feed(reference, later)
    assert not list(tmp_path.glob("*.partial"))


def test_import_refuses_corrupt_foreign_and_mismatched_files(tmp_path) -> None:
    path = export_snapshot(trained(100), tmp_path, created_at=5)
    data = path.read_bytes()

    (tmp_path / "truncated.pzm").write_bytes(data[:-10])
    with pytest.raises(SnapshotError, match="truncated or corrupted"):
        import_snapshot(tmp_path / "truncated.pzm")

    (tmp_path / "foreign.pzm").write_bytes(b"hello\n")
    with pytest.raises(SnapshotError, match="bad magic"):
        import_snapshot(tmp_path / "foreign.pzm")

    header_line, payload = data[len(MAGIC):].split(b"\n", 1)
    header = json.loads(header_line)

    def with_header(name: str, **changes) -> Path:
        (tmp_path / name).write_bytes(MAGIC + json.dumps({**header, **changes}).encode() + b"\n" + payload)
        return tmp_path / name

    with pytest.raises(SnapshotError, match="river 0.1.0"):
        import_snapshot(with_header("old-river.pzm", river="0.1.0"))
    with pytest.raises(SnapshotError, match="format 99"):
        import_snapshot(with_header("future.pzm", format=99))


def test_snapshot_size_stays_bounded_as_examples_grow() -> None:
    """Once the recent windows (1000 labels, 1 h of trending buckets) are full, doubling the
    examples leaves the size flat: only the whole-run counters' integers get longer."""
    models = SharedModels()
    steps = stream(5, 10_000)
    sizes = {}
    previous = 0
    for done in (2_500, 5_000, 10_000):
        feed(models, steps[previous:done])
        previous = done
        sizes[done] = len(models.snapshot())
    assert models.propensity.learned == 10_000
    assert abs(sizes[10_000] - sizes[5_000]) < 0.01 * sizes[5_000]
    assert sizes[10_000] < 150_000
