"""A latent-factor model for implicit feedback, trained by SGD one interaction at a time (BPR).

Why our own rather than River's ``reco`` models: those learn explicit ratings one (user, item)
pair at a time and score one pair per call, so a top-N over thousands of items would be thousands
of Python calls per event. Here item factors sit in one numpy matrix and a user's scores are a
single matrix-vector product.

A user is their own factor plus the mean factor of their recent items (as in FISM/SVD++), so a
user seen for three events in one session already has a useful position. Each interaction is one
BPR step against ``negatives`` items drawn from recent interactions (popular items are drawn
more often, the harder negatives). Items live in ``max_items`` slots; the least recently touched
item's slot is reused for a newcomer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


class ImplicitMF:
    def __init__(self, dim: int, learning_rate: float, regularization: float, negatives: int,
                 max_items: int, seed: int) -> None:
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.negatives = negatives
        self.rng = np.random.default_rng(seed)
        self.item_factors = self.rng.normal(0.0, 0.1, (max_items, dim))
        self.item_bias = np.zeros(max_items)
        self.slots: OrderedDict[str, int] = OrderedDict()
        self.items: list[str | None] = [None] * max_items
        self.users: dict[str, NDArray[np.float64]] = {}
        self.recent_slots = np.zeros(max(1, 50 * negatives), dtype=np.int64)
        self.seen = 0

    def learn(self, user: str, item: str, recent: Sequence[str], weight: float) -> None:
        """One BPR step: ``item`` above sampled negatives for ``user`` with ``recent`` (their items before it)."""
        positive = self._slot(item)
        vector = self._user_vector(user, recent)
        if self.seen:
            pool = self.recent_slots[: min(self.seen, len(self.recent_slots))]
            for negative in self.rng.choice(pool, self.negatives):
                if negative != positive:
                    self._step(user, vector, positive, int(negative), weight)
        self.recent_slots[self.seen % len(self.recent_slots)] = positive
        self.seen += 1

    def scores(self, user: str, recent: Sequence[str]) -> tuple[NDArray[np.float64], list[str | None]]:
        """The score of every item held for ``user``, and the item in each slot (slots fill from 0)."""
        held = len(self.slots)
        return self.item_factors[:held] @ self._user_vector(user, recent) + self.item_bias[:held], self.items

    def _step(self, user: str, vector: NDArray[np.float64], positive: int, negative: int, weight: float) -> None:
        pos, neg = self.item_factors[positive], self.item_factors[negative]
        margin = vector @ (pos - neg) + self.item_bias[positive] - self.item_bias[negative]
        gradient = weight * self.learning_rate / (1.0 + np.exp(np.clip(margin, -30, 30)))
        reg = self.learning_rate * self.regularization
        own = self.users[user]
        self.item_factors[positive] += gradient * vector - reg * pos
        self.item_factors[negative] -= gradient * vector + reg * neg
        self.item_bias[positive] += gradient - reg * self.item_bias[positive]
        self.item_bias[negative] -= gradient + reg * self.item_bias[negative]
        own += gradient * (pos - neg) - reg * own

    def _user_vector(self, user: str, recent: Sequence[str]) -> NDArray[np.float64]:
        own = self.users.get(user)
        if own is None:
            own = self.users[user] = np.zeros(self.item_factors.shape[1])
        known = [self.slots[item] for item in recent if item in self.slots]
        return own + self.item_factors[known].mean(axis=0) if known else own.copy()

    def _slot(self, item: str) -> int:
        slot = self.slots.get(item)
        if slot is not None:
            self.slots.move_to_end(item)
            return slot
        if len(self.slots) < len(self.items):
            slot = len(self.slots)
        else:
            _, slot = self.slots.popitem(last=False)
        self.slots[item] = slot
        self.items[slot] = item
        self.item_factors[slot] = self.rng.normal(0.0, 0.1, self.item_factors.shape[1])
        self.item_bias[slot] = 0.0
        return slot
