"""The core objects the job runs, built from the settings: one place, so the operators, the
learning quality replays, the bench and the tests build them alike (and none of them needs a
Flink adapter to get one).

May import: ``udfs`` (the user-agent enrichment), ``config`` and ``core``; no Flink. Imported by
``operators``, ``tools``, the bench and the tests.
"""

from __future__ import annotations

from collections.abc import Callable

from personalization.config.settings import Settings
from personalization.core.learning.clusters import Clusters
from personalization.core.learning.feed import LearningFeed, check_windows
from personalization.core.learning.interests import InterestRules
from personalization.core.learning.propensity import Propensity
from personalization.core.learning.shared import SharedModels
from personalization.core.learning.trainer import TrainerRules
from personalization.core.learning.trending import Trending
from personalization.core.rules import RuleSet
from personalization.core.sessions import SessionRules
from personalization.core.user import StateCaps, UserLogic
from personalization.udfs.enrichment import enrich


def session_rules(settings: Settings) -> SessionRules:
    """Where a session ends (``time.session_gap``, ``time.max_session_length``) and how late an
    event may still join one (``time.allowed_lateness``)."""
    time_cfg = settings.time
    return SessionRules(time_cfg.session_gap, time_cfg.max_session_length, time_cfg.allowed_lateness)


def user_logic(settings: Settings, rules: RuleSet | None = None) -> UserLogic:
    """The per-user logic of the user operator; ``rules`` default to none (``with_rules`` adds them)."""
    time_cfg = settings.time
    logic = UserLogic(
        session_rules=session_rules(settings),
        window_sizes=tuple(time_cfg.windows.sizes),
        window_buckets=time_cfg.windows.buckets,
        dedup_horizon_ms=settings.profile.dedup_horizon,
        top_categories=settings.profile.top_categories,
        caps=StateCaps(seen_ids=settings.profile.max_seen_ids, categories=settings.profile.max_categories,
                       session_events=settings.profile.max_session_events),
        device_of=enrich if settings.enrichment.user_agent else None,
        learning=learning_feed(settings),
        experiments=settings.experiment_map(),
    )
    return logic if rules is None else logic.with_rules(rules)


def device_class_of(settings: Settings) -> Callable[[str | None], str | None]:
    """The device class of a user agent (``mobile``, ``desktop``, ...) with ``enrichment.user_agent``
    on, None for an event without one; always None with it off."""
    if not settings.enrichment.user_agent:
        return lambda user_agent: None
    return lambda user_agent: enrich(user_agent).device_class.value if user_agent else None


def learning_feed(settings: Settings) -> LearningFeed | None:
    """What each user task sends the trainer, or None when ``learning.enabled`` is off."""
    cfg = settings.learning
    if not cfg.enabled:
        return None
    check_windows(settings.time.windows.sizes)
    return LearningFeed(
        session_rules(settings),
        InterestRules(half_life_ms=cfg.interests_half_life, max_categories=cfg.interests_max_categories,
                      top_k=cfg.interests_top_k, min_events=cfg.cold_start_min_events))


def trainer_rules(settings: Settings) -> TrainerRules:
    """A session's label is final once no late event can reopen it: gap plus allowed lateness."""
    return TrainerRules(horizon_ms=settings.time.session_gap + settings.time.allowed_lateness,
                        top_k=settings.learning.interests_top_k, export_every=settings.learning.export_every)


def new_models(settings: Settings) -> SharedModels:
    """The trainer's models before the first example (also what a restore replays onto)."""
    cfg = settings.learning
    return SharedModels(propensity=Propensity(window=cfg.recent_window), clusters=Clusters(n_clusters=cfg.clusters),
                        trending=Trending(window_ms=cfg.trending_window, bucket_ms=60_000))
