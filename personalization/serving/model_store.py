"""Redis keys of the online models: per-user predictions and the model's own state.

Key names are built in ``serving.redis_store`` (the key schema, ids percent-encoded):

- ``<prefix>:{<user>}:predictions``  hash in the user's hash slot (beside the profile), one JSON
  value per field: ``propensity``, ``propensity_known``, ``propensity_session``,
  ``propensity_at``, ``interests``, ``cluster``, ``cluster_at``, plus ``version`` (the trainer's
  record number: a compare-and-set refuses older ones) and ``updated_at`` (wall clock). Expires
  like the profile (``redis.profile_ttl``).
- ``<prefix>:model``  hash: ``propensity`` (progressive metrics, whole run and recent window),
  ``clusters`` (centroids and members' means in readable units), ``trending``, ``records_processed``,
  ``users_with_labels``, ``model_bytes``, ``last_snapshot``, ``updated_at``.

The trainer writes a batch (every user it updated in one operation, and the model hash) in one
pipelined round trip, retried with backoff while Redis is down (``redis_store.retry_while_down``:
the operator back-pressures).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from personalization.serving.redis_store import VersionedHashWriter, model_key, predictions_key


class ModelWriter:
    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int, backoff_max_ms: int = 5_000) -> None:
        self._prefix = prefix
        self._hashes = VersionedHashWriter(client, ttl_ms, backoff_max_ms)

    def write(self, writes: dict[str, tuple[int, dict[str, Any]]], model: dict[str, Any] | None = None,
              erased: list[str] = ()) -> None:
        """``erased``: users whose predictions are deleted (erasure), after the writes."""
        def rest(pipe, now: int) -> None:
            if model:
                pipe.hset(model_key(self._prefix), mapping={**{k: orjson.dumps(v) for k, v in model.items()},
                                                            "updated_at": now})
            for user in erased:
                pipe.delete(predictions_key(self._prefix, user))
        if writes or model or erased:
            self._hashes.write([(predictions_key(self._prefix, user), version, fields)
                                for user, (version, fields) in writes.items()], rest)


def read_predictions(client: redis.Redis, prefix: str, user_id: str) -> dict[str, Any] | None:
    raw = client.hgetall(predictions_key(prefix, user_id))
    return {k.decode(): orjson.loads(v) for k, v in raw.items()} if raw else None


def read_model(client: redis.Redis, prefix: str) -> dict[str, Any] | None:
    raw = client.hgetall(model_key(prefix))
    return {k.decode(): orjson.loads(v) for k, v in raw.items()} if raw else None
