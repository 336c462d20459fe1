"""A user's recommendations in Redis (``<prefix>:{<user>}:recommendations``, see ``redis_store``).

Written by the item side of the job (``operators.recommend``) with the profile's compare-and-set
script: the user's request number is the version, so a replay after a restore rewrites nothing
newer, and the newest request wins when requests of one user are answered by different item tasks.
Answers are held back and sent many per round trip (``HeldRecommendations``). An erasure, opt-out
or reset leaves a tombstone (the hash with its ``version`` alone, ``erase``): answers computed before
it and still on their way are refused, and readers find no recommendations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import redis

from personalization.core.recommend.stream import Recommendations
from personalization.serving.redis_store import VersionedHashWriter, recommendations_key


class RecommendationWriter:
    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int, backoff_max_ms: int = 5_000) -> None:
        self._prefix = prefix
        self._hashes = VersionedHashWriter(client, ttl_ms, backoff_max_ms)

    def erase(self, user: str, floor: int) -> None:
        """Replace the user's recommendations by a tombstone of version ``floor`` (at least): no
        answer numbered ``floor`` or below is written afterwards (``core.recommend.stream.user_control``)."""
        self._hashes.erase(recommendations_key(self._prefix, user), floor)

    def write_many(self, recos: Iterable[Recommendations]) -> None:
        """Every answer in one round trip (compare-and-set each)."""
        self._hashes.write([(recommendations_key(self._prefix, reco.user), reco.version,
                             {"items": reco.items, "model_version": reco.model_version, "item": reco.item,
                              "at": reco.at}) for reco in recos])


class HeldRecommendations:
    """Answers held back for a batch: one per user (the newest request's), all sent in one round
    trip when ``max_batch`` users are held or when the owner calls ``flush`` (the item operator
    does within ``redis.batch_delay``). What is held is also in the answering item's checkpointed
    state until a flush is known to have covered it, so a restore re-sends it (see
    ``operators.recommend``)."""

    def __init__(self, writer: RecommendationWriter, max_batch: int) -> None:
        self._writer = writer
        self._max_batch = max_batch
        self._held: dict[str, Recommendations] = {}

    def put(self, reco: Recommendations) -> None:
        held = self._held.get(reco.user)
        if held is None or held.version < reco.version:
            self._held[reco.user] = reco
        if len(self._held) >= self._max_batch:
            self.flush()

    def holds(self, reco: Recommendations) -> bool:
        """True while ``reco`` waits to be sent (not yet flushed, nor replaced by a newer answer)."""
        return self._held.get(reco.user) == reco

    def flush(self) -> int:
        """Send every held answer; the number of users written."""
        recos = list(self._held.values())
        if recos:
            self._writer.write_many(recos)
            self._held.clear()
        return len(recos)


def read_recommendations(client: redis.Redis, prefix: str, user_id: str) -> dict[str, Any] | None:
    """The user's recommendations; None when there are none (no key, or an erasure's tombstone)."""
    raw = client.hgetall(recommendations_key(prefix, user_id))
    return {k.decode(): orjson.loads(v) for k, v in raw.items()} if b"items" in raw else None
