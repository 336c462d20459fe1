"""A user's recommendations in Redis (``<prefix>:{<user>}:recommendations``, see ``redis_store``).

Written by the item side of the job (``operators.recommend``) with the profile's compare-and-set
script: the user's request number is the version, so a replay after a restore rewrites nothing
newer, and the newest request wins when requests of one user are answered by different item tasks.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from personalization.core.recommend.stream import Recommendations
from personalization.serving.redis_store import _APPLY_PROFILE, encode_profile, recommendations_key, retry_while_down


class RecommendationWriter:
    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int, backoff_max_ms: int = 5_000) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = ttl_ms
        self._backoff_max_ms = backoff_max_ms
        self._script = client.register_script(_APPLY_PROFILE)

    def write(self, reco: Recommendations) -> None:
        fields = {"items": reco.items, "model_version": reco.model_version, "item": reco.item, "at": reco.at}
        args = [reco.version, self._ttl_ms, b"updated_at", int(time.time() * 1000), *encode_profile(fields)]
        retry_while_down(lambda: self._script(keys=[recommendations_key(self._prefix, reco.user)], args=args),
                         self._backoff_max_ms)


def read_recommendations(client: redis.Redis, prefix: str, user_id: str) -> dict[str, Any] | None:
    raw = client.hgetall(recommendations_key(prefix, user_id))
    return {k.decode(): orjson.loads(v) for k, v in raw.items()} if raw else None
