"""The recommender's parameters as plain data (validated and defaulted by ``config.settings``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecoConfig:
    """Field meanings are documented beside the defaults in ``config/default.yaml`` (``recommendations:``)."""

    enabled: bool
    ttl_ms: int
    state_ttl_ms: int
    max_purchased: int
    top_n: int
    event_weights: dict[str, float]
    history_length: int
    session_gap_ms: int
    knn_neighbours: int
    knn_half_life_ms: int
    knn_max_items: int
    mf_dim: int
    mf_learning_rate: float
    mf_regularization: float
    mf_negatives: int
    mf_max_items: int
    mf_seed: int
    blend_weights: dict[str, float]
    blend_rank_offset: int
    trending_window_ms: int
    trending_bucket_ms: int
    trending_max_items: int
    trending_shards: int
    trending_max_contexts: int
    cold_start_min_events: int
    exclude_purchased: bool
    max_per_category: int
    cap_impressions: int
    cap_duration_ms: int
    cap_max_items: int
