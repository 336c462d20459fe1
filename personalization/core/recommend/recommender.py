"""Every recommender fed by the same interactions, and the blend that the job serves.

``learn`` takes one interaction (a product view, favourite, add to cart or purchase) after the
recommendations for it were asked for; ``recommend`` returns a user's top-N from one source or from
the blend. The blend is a weighted reciprocal-rank fusion of the item-kNN, the factor model, the
user's recent items and trending in context: ranks, not raw scores, because the sources' scores
are on unrelated scales. Each item carries the source that gave it the most weight: the "why".
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from personalization.core.recommend.baselines import GLOBAL, ContextTrending, Popularity, contexts_of
from personalization.core.recommend.config import RecoConfig
from personalization.core.recommend.cooccurrence import ItemKNN
from personalization.core.recommend.factorization import ImplicitMF
from personalization.core.recommend.selection import Exposure, select

SOURCES = ("blend", "knn", "mf", "recent", "popularity", "trending")
BLENDED = ("knn", "mf", "recent", "trending")
DEPTH_FACTOR = 5   # candidates asked of each source per item shown (room for exclusions and diversity)


@dataclass(frozen=True, slots=True)
class Interaction:
    user: str
    item: str
    category: str | None
    kind: str          # contract event type: product_view, favorite, add_to_cart, purchase
    ts: int
    referrer: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    item: str
    source: str        # knn (co-view), mf (model), recent, trending, popularity


@dataclass(slots=True)
class UserHistory:
    """What the recommender keeps per user (keyed state in the job)."""

    recent: OrderedDict[str, int] = field(default_factory=OrderedDict)   # item -> last ts, newest last
    events: int = 0
    purchased: set[str] = field(default_factory=set)
    contexts: list[str] = field(default_factory=list)                     # of the first views: cold start
    exposure: Exposure | None = None

    def newest_first(self) -> list[str]:
        return list(reversed(self.recent))


class Recommender:
    def __init__(self, config: RecoConfig) -> None:
        self.config = config
        depth = config.top_n * DEPTH_FACTOR
        self.knn = ItemKNN(config.knn_neighbours, config.knn_half_life_ms, config.knn_max_items)
        self.mf = ImplicitMF(config.mf_dim, config.mf_learning_rate, config.mf_regularization,
                             config.mf_negatives, config.mf_max_items, config.mf_seed)
        self.popularity = Popularity(depth)
        self.trending = ContextTrending(config.trending_window_ms, config.trending_bucket_ms,
                                        config.trending_max_items)
        self.users: dict[str, UserHistory] = {}
        self.categories: OrderedDict[str, str] = OrderedDict()
        self.newest = 0

    def learn(self, x: Interaction) -> None:
        """Update every model with one interaction (after its recommendations were scored)."""
        weight = self.config.event_weights.get(x.kind, 0.0)
        if weight <= 0:
            return
        self.newest = max(self.newest, x.ts)
        user = self.users.setdefault(x.user, UserHistory())
        recent = [(item, user.recent[item]) for item in reversed(user.recent)]
        self.knn.learn(x.item, recent, weight, x.ts, self.config.session_gap_ms)
        self.mf.learn(x.user, x.item, [item for item, _ in recent], weight)
        self.popularity.learn(x.item, weight)
        contexts = contexts_of(x.category, x.referrer, x.device)
        self.trending.learn(x.item, x.ts, contexts)
        if x.category is not None:
            self.categories[x.item] = x.category
            self.categories.move_to_end(x.item)
            if len(self.categories) > self.config.knn_max_items:
                self.categories.popitem(last=False)
        if user.events < self.config.cold_start_min_events:
            user.contexts.extend(c for c in contexts if c not in user.contexts)
        user.events += 1
        user.recent.pop(x.item, None)
        user.recent[x.item] = x.ts
        if len(user.recent) > self.config.history_length:
            user.recent.popitem(last=False)
        if x.kind == "purchase":
            user.purchased.add(x.item)

    def impression(self, user_id: str, items: list[str], ts: int) -> None:
        """Items shown to the user: counts towards frequency capping."""
        user = self.users.setdefault(user_id, UserHistory())
        if user.exposure is None:
            user.exposure = Exposure(self.config.cap_impressions, self.config.cap_duration_ms, self.config.cap_max_items)
        user.exposure.impression(items, ts)

    def click(self, user_id: str, item: str) -> None:
        user = self.users.get(user_id)
        if user is not None and user.exposure is not None:
            user.exposure.click(item)

    def recommend(self, user_id: str, now: int, source: str = "blend") -> list[Recommendation]:
        """The user's top-N from ``source`` (one of ``SOURCES``): the current item, purchased items
        (if configured) excluded, at most ``max_per_category`` per category, capped items demoted."""
        user = self.users.get(user_id) or UserHistory()
        history = user.newest_first()
        if source == "blend":
            ranked, origin = self._blend(user_id, user, history, now)
        else:
            ranked = self.ranked(source, user_id, user, history, now)
            origin = dict.fromkeys(ranked, source)
        exclude = set(history[:1])
        if self.config.exclude_purchased:
            exclude |= user.purchased
        exposure = user.exposure
        chosen = select(ranked, self.config.top_n, exclude=exclude, category_of=self.categories.get,
                        max_per_category=self.config.max_per_category,
                        demoted=(lambda item: exposure.demoted(item, now)) if exposure else (lambda item: False))
        return [Recommendation(item, origin[item]) for item in chosen]

    def ranked(self, source: str, user_id: str, user: UserHistory, history: list[str], now: int) -> list[str]:
        """One source's candidates, best first, before selection."""
        depth = self.config.top_n * DEPTH_FACTOR
        if source == "recent":
            return history
        if source == "popularity":
            return self.popularity.ranked()
        if source == "trending":
            return self._trending(user, history, depth)
        if source == "knn":
            scores = self.knn.scores(history, now)
            return sorted(scores, key=lambda item: (-scores[item], item))[:depth]
        if source == "mf":
            mf_scores, items = self.mf.scores(user_id, history)
            depth = min(depth, len(mf_scores))
            if not depth:
                return []
            top = np.argpartition(-mf_scores, depth - 1)[:depth]
            return [items[i] for i in sorted(top, key=lambda i: -mf_scores[i])]
        raise ValueError(f"unknown recommendation source {source!r}; expected one of {SOURCES}")

    def _trending(self, user: UserHistory, history: list[str], depth: int) -> list[str]:
        """Trending in the current item's category, then in the contexts of the first views, then everywhere."""
        current = [f"category:{self.categories[history[0]]}"] if history and history[0] in self.categories else []
        ranked: list[str] = []
        for context in dict.fromkeys([*current, *user.contexts, GLOBAL]):
            ranked.extend(self.trending.ranked(context, depth))
        return ranked

    def _blend(self, user_id: str, user: UserHistory, history: list[str],
               now: int) -> tuple[list[str], dict[str, str]]:
        if user.events < self.config.cold_start_min_events:
            ranked = self._trending(user, history, self.config.top_n * DEPTH_FACTOR)
            return ranked, dict.fromkeys(ranked, "trending")
        weights = self.config.blend_weights
        offset = self.config.blend_rank_offset
        scores: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        for source in BLENDED:
            weight = weights.get(source, 0.0)
            if weight <= 0:
                continue
            for rank, item in enumerate(self.ranked(source, user_id, user, history, now)):
                share = weight / (offset + rank)
                scores[item] = scores.get(item, 0.0) + share
                if share > best.get(item, (0.0, ""))[0]:
                    best[item] = (share, source)
        ranked = sorted(scores, key=lambda item: (-scores[item], item))
        return ranked, {item: best[item][1] for item in ranked}
