"""Clusters: two well separated kinds of users end up in two different, stable clusters."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from personalization.core.learning.clusters import CLUSTER_FEATURES, Clusters, profile_features

# Browsers: 10 events over 5 sessions, page views and scrolls, no purchase, 3 s dwell per event.
BROWSER = profile_features(counts={"page_view": 8, "scroll": 2}, sessions_closed=5, sessions_converted=0,
                           dwell_ms=30_000, max_scroll_depth=0.2)
# Buyers: 20 events over 2 sessions, both converted, 10 s dwell per event.
BUYER = profile_features(counts={"product_view": 10, "add_to_cart": 5, "purchase": 5}, sessions_closed=2,
                         sessions_converted=2, dwell_ms=200_000, max_scroll_depth=0.9)


def test_profile_features_are_in_readable_units() -> None:
    assert list(BROWSER) == list(CLUSTER_FEATURES)
    assert BROWSER == {
        "events_per_session": 2.0, "purchase_rate": 0.0, "dwell_s_per_event": 3.0, "max_scroll_depth": 0.2,
        "share_page_view": 0.8, "share_product_view": 0.0, "share_click": 0.0, "share_scroll": 0.2,
        "share_add_to_cart": 0.0, "share_favorite": 0.0, "share_purchase": 0.0,
    }
    assert BUYER["events_per_session"] == 10.0 and BUYER["purchase_rate"] == 1.0
    assert BUYER["share_purchase"] == 0.25


def test_a_user_without_events_or_sessions_has_zero_features() -> None:
    empty = profile_features(counts={}, sessions_closed=0, sessions_converted=0, dwell_ms=0, max_scroll_depth=0.0)
    assert set(empty.values()) == {0.0}


def run(seed: int) -> tuple[list[tuple[str, int]], Clusters]:
    clusters = Clusters(n_clusters=5, halflife=0.5, seed=seed)
    alternating = [("browser", BROWSER), ("buyer", BUYER)] * 20
    return [(kind, clusters.assign(x)) for kind, x in alternating], clusters


@pytest.mark.parametrize("seed", range(10))
def test_two_separated_groups_get_two_stable_cluster_ids(seed: int) -> None:
    assignments, _ = run(seed)
    settled = assignments[-20:]
    browsers = {cid for kind, cid in settled if kind == "browser"}
    buyers = {cid for kind, cid in settled if kind == "buyer"}
    assert len(browsers) == 1 and len(buyers) == 1 and browsers != buyers


def test_exact_assignments_for_seed_42() -> None:
    assignments, clusters = run(42)
    assert [cid for _, cid in assignments[:6]] == [0, 3, 0, 3, 0, 3]
    assert {kind: cid for kind, cid in assignments} == {"browser": 0, "buyer": 3}
    assert clusters.assignments == {0: 20, 3: 20}


def test_summary_gives_centroids_in_original_units() -> None:
    _, clusters = run(42)
    summary = clusters.summary()
    assert [(s["cluster"], s["assignments"]) for s in summary] == [(0, 20), (3, 20)]
    for entry, truth in zip(summary, (BROWSER, BUYER)):
        assert list(entry["centroid"]) == list(CLUSTER_FEATURES)
        # A centre chases the running scaler, so it lags one step behind when the other group
        # moved the scaler last: within 2% of the distance between the groups (1.3% here).
        for name, value in truth.items():
            tolerance = 0.02 * abs(BUYER[name] - BROWSER[name]) + 1e-4
            assert entry["centroid"][name] == pytest.approx(value, abs=tolerance), name
    assert summary[1]["centroid"] == BUYER   # the group learned last sits exactly on its centre


def test_same_seed_gives_same_clusters_in_another_process() -> None:
    """Centre initialisation must not depend on the process's string hashing (PYTHONHASHSEED)."""
    code = ("import pickle,sys; from personalization.core.learning.clusters import Clusters; "
            "sys.stdout.buffer.write(pickle.dumps(dict(Clusters(seed=7).kmeans.centers[0])))")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                       env={"PYTHONHASHSEED": str(hash_seed), "PYTHONPATH": "."}).stdout
        for hash_seed in (1, 2, 3)
    }
    assert len(outputs) == 1
    assert pickle.loads(outputs.pop()) == dict(Clusters(seed=7).kmeans.centers[0])


def test_summary_gives_the_mean_of_each_clusters_assignments() -> None:
    """A centre moves halfway to each assignment (halflife 0.5): one outlier assigned last sets it,
    as "dwell_s_per_event: 2,467" did in the demo. The mean of the assignments describes the cluster."""
    _, clusters = run(42)
    outlier = {**BUYER, "dwell_s_per_event": 3_000.0}
    cluster_id = clusters.assign(outlier)
    entry = next(e for e in clusters.summary() if e["cluster"] == cluster_id)
    assert list(entry["mean"]) == list(CLUSTER_FEATURES)
    members = entry["assignments"]
    assert members == 21
    assert entry["mean"]["dwell_s_per_event"] == pytest.approx((20 * BUYER["dwell_s_per_event"] + 3_000) / 21, abs=1e-3)
    assert entry["centroid"]["dwell_s_per_event"] > 1_000   # the centre chased the outlier
    browsers = next(e for e in clusters.summary() if e["cluster"] != cluster_id)
    assert browsers["mean"] == pytest.approx(BROWSER, abs=1e-4)


def test_clusters_pickled_before_the_means_restore() -> None:
    _, clusters = run(42)
    state = {k: v for k, v in clusters.__dict__.items() if k not in ("means", "mean_counts")}
    old = Clusters.__new__(Clusters)
    old.__setstate__(state)
    assert [e["mean"] for e in old.summary()] == [{}, {}]   # no members seen since
    old.assign(BROWSER)
    assert old.summary()[0]["mean"] == pytest.approx(BROWSER, abs=1e-4)
