"""Behavioural clusters: River's online k-means over standardised profile features.

One assignment per user at session close (the operator calls ``Clusters.assign`` for each
session emitted with status ``closed``): the nearest centre moves towards the user and its
id is the user's cluster. Centres live in standardised units; ``summary`` maps them back to
the original units with the scaler's current mean and deviation.

A centre is not a typical member: with River's ``halflife`` of 0.5 it moves halfway to each
assignment, so it sits near the last few users assigned. On the demo's data one centre read
"dwell_s_per_event: 2,467" (a JD user who left a product page open for hours) while its 3,590
members averaged far less. ``summary`` therefore also gives each cluster's ``mean``: the running
mean of the features of every assignment, in original units, which is what describes a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from river import cluster, preprocessing

from personalization.core.events import BEHAVIOUR_TYPES

CLUSTER_FEATURES: tuple[str, ...] = (
    "events_per_session",
    "purchase_rate",
    "dwell_s_per_event",
    "max_scroll_depth",
    *(f"share_{t}" for t in BEHAVIOUR_TYPES),
)


def profile_features(*, counts: Mapping[str, int], sessions_closed: int, sessions_converted: int,
                     dwell_ms: int, max_scroll_depth: float) -> dict[str, float]:
    """Lifetime behaviour in readable units; ``purchase_rate`` is converted sessions per session."""
    events = sum(counts.values())
    sessions = max(sessions_closed, 1)
    x = {
        "events_per_session": events / sessions,
        "purchase_rate": sessions_converted / sessions,
        "dwell_s_per_event": dwell_ms / 1000 / events if events else 0.0,
        "max_scroll_depth": float(max_scroll_depth),
    }
    for t in BEHAVIOUR_TYPES:
        x[f"share_{t}"] = counts.get(t, 0) / events if events else 0.0
    return x


class Clusters:
    def __init__(self, n_clusters: int = 5, halflife: float = 0.5, seed: int = 42) -> None:
        self.scaler = preprocessing.StandardScaler()
        self.kmeans = cluster.KMeans(n_clusters=n_clusters, halflife=halflife, seed=seed)
        # River draws a centre's coordinate on first access, in the iteration order of a set
        # of feature names, which depends on the process's string hashing: draw them all now,
        # in a fixed order, so the same seed gives the same centres in every process.
        for centre in self.kmeans.centers.values():
            for name in CLUSTER_FEATURES:
                centre[name]
        self.assignments: dict[int, int] = {}
        self.means: dict[int, dict[str, float]] = {}
        self.mean_counts: dict[int, int] = {}   # assignments in each mean (fewer after a restore, below)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Models pickled before the means existed restore with none: they fill from then on.

        The means are re-keyed by the ``CLUSTER_FEATURES`` names themselves, as ``assign`` keys
        new ones: restored and new means then share the name objects, as in a run that never
        restored, and the models pickle to the same size (``Trainer.model_bytes``; unpickled
        names are copies, which pickle writes out again)."""
        self.__dict__.update({"means": {}, "mean_counts": {}, **state})
        self.means = {cluster_id: {name: mean[name] for name in CLUSTER_FEATURES if name in mean}
                      for cluster_id, mean in self.means.items()}

    def assign(self, x: dict[str, float]) -> int:
        """Learn one user's profile and return the id of the centre it joined."""
        self.scaler.learn_one(x)
        cluster_id: int = self.kmeans.learn_predict_one(self.scaler.transform_one(x))
        self.assignments[cluster_id] = self.assignments.get(cluster_id, 0) + 1
        count = self.mean_counts[cluster_id] = self.mean_counts.get(cluster_id, 0) + 1
        mean = self.means.setdefault(cluster_id, dict.fromkeys(CLUSTER_FEATURES, 0.0))
        for name in CLUSTER_FEATURES:
            mean[name] += (x.get(name, 0.0) - mean[name]) / count
        return cluster_id

    def summary(self) -> list[dict[str, Any]]:
        """Clusters that have been assigned: the centre and the members' mean, in original units,
        rounded for reading (``mean`` is empty for a cluster whose members predate it, see above)."""
        out = []
        for cluster_id, count in sorted(self.assignments.items()):
            centre = self.kmeans.centers[cluster_id]
            out.append({
                "cluster": cluster_id,
                "assignments": count,
                "centroid": {name: self._original_units(name, centre[name]) for name in CLUSTER_FEATURES},
                "mean": {name: round(value, 4) for name, value in self.means.get(cluster_id, {}).items()},
            })
        return out

    def _original_units(self, name: str, scaled: float) -> float:
        value: float = self.scaler.means[name] + scaled * self.scaler.vars[name] ** 0.5
        return round(value, 4) + 0.0   # + 0.0 turns -0.0 into 0.0
