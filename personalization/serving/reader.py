"""Reader library for downstream apps: profiles, segments, audiences and the change stream,
without knowing the key layout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import redis

from personalization.config.settings import Settings
from personalization.serving.model_store import read_model, read_predictions
from personalization.serving.reco_store import read_recommendations
from personalization.serving.redis_store import (
    alias_key, batched, changes_key, connect, decode_change, decode_profile, experiment_key, members_key,
    members_key_pattern,
    profile_key, profile_key_pattern, segment_of,
)

SEGMENT_FIELDS = ("segments", "primary_segment", "scores", "rules_version")


class ProfileReader:
    def __init__(self, client: redis.Redis, prefix: str = "pz:v2") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> ProfileReader:
        return cls(connect(settings.redis), settings.redis.key_prefix)

    def ping(self) -> None:
        """Raise a ``redis.RedisError`` unless the server answers (readiness checks)."""
        self._client.ping()

    def get(self, user_id: str) -> dict[str, Any] | None:
        """The profile of a user id or anonymous id; an anonymous id stitched into a user's profile
        gives that profile (its ``user_id`` says whose). One round trip (two for an alias)."""
        return self.get_many([user_id])[user_id]

    def get_many(self, user_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Profiles of many ids in one round trip (a pipeline of alias lookups and profile reads);
        a second one only for ids that are aliases of a stitched user."""
        pipe = self._client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.get(alias_key(self._prefix, user_id))
            pipe.hgetall(profile_key(self._prefix, user_id))
        replies = pipe.execute()
        out = {user_id: decode_profile(raw) if raw else None
               for user_id, raw in zip(user_ids, replies[1::2])}
        aliased = {user_id: alias.decode() for user_id, alias in zip(user_ids, replies[0::2]) if alias is not None}
        if aliased:
            pipe = self._client.pipeline(transaction=False)
            for target in aliased.values():
                pipe.hgetall(profile_key(self._prefix, target))
            for user_id, raw in zip(aliased, pipe.execute()):
                out[user_id] = decode_profile(raw) if raw else None
        return out

    def version(self, user_id: str) -> int | None:
        """The profile's version alone (cheap to poll), None if there is no profile."""
        value = self._client.hget(profile_key(self._prefix, self.resolve(user_id)), "version")
        return None if value is None else int(value)

    def resolve(self, user_id: str) -> str:
        """The id whose profile holds ``user_id``'s behaviour: the user an anonymous id was
        stitched into, else the id itself."""
        alias = self._client.get(alias_key(self._prefix, user_id))
        return alias.decode() if alias is not None else user_id

    def predictions(self, user_id: str) -> dict[str, Any] | None:
        """The online models' view of the user: purchase propensity (``propensity_known`` once the
        session has its purchase), behavioural ``cluster``, ``interests`` (``source`` personal or
        trending for a cold start); None if the trainer has not seen the user."""
        return read_predictions(self._client, self._prefix, self.resolve(user_id))

    def recommendations(self, user_id: str) -> dict[str, Any] | None:
        """The user's top-N (``items``: each with its ``source``), ``model_version``, the ``item`` and
        event time (``at``) it answers and its ``version``; None until the job wrote one."""
        return read_recommendations(self._client, self._prefix, self.resolve(user_id))

    def model(self) -> dict[str, Any] | None:
        """The models' progressive metrics, cluster centroids, trending categories and size."""
        return read_model(self._client, self._prefix)

    def segments(self, user_id: str) -> dict[str, Any] | None:
        """The user's segments (segment -> event time entered), primary segment, scores and the
        rules version that decided them; None if there is no profile."""
        values = self._client.hmget(profile_key(self._prefix, self.resolve(user_id)), *SEGMENT_FIELDS)
        if all(value is None for value in values):
            return None
        return {name: None if value is None else orjson.loads(value) for name, value in zip(SEGMENT_FIELDS, values)}

    def experiments(self, user_id: str) -> dict[str, Any] | None:
        """The user's experiments, name -> ``variant`` (the assignment) and ``exposed_at`` (None
        until an exposure was read) with the outcome so far (``core.experiments``); None if there
        is no profile."""
        value = self._client.hget(profile_key(self._prefix, self.resolve(user_id)), "experiments")
        return None if value is None else orjson.loads(value)

    def experiment_outcomes(self, experiment: str) -> list[dict[str, Any]]:
        """Every exposed user's outcome record in ``experiment`` (HSCAN: a large experiment does
        not block the server), what ``pz experiment-report`` aggregates."""
        return [orjson.loads(value) for _, value in
                self._client.hscan_iter(experiment_key(self._prefix, experiment), count=1000)]

    def members(self, segment: str) -> set[str]:
        """Every user currently in ``segment`` (SSCAN, so large audiences do not block the server)."""
        return {member.decode() for member in self._client.sscan_iter(members_key(self._prefix, segment), count=1000)}

    def segment_sizes(self) -> dict[str, int]:
        """Members per segment, for every segment that has (or had) members."""
        keys = sorted(self._client.scan_iter(match=members_key_pattern(self._prefix), count=1000))
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.scard(key)
        names = [segment_of(key.decode(), self._prefix) for key in keys]
        return {name: size for name, size in zip(names, pipe.execute()) if size}

    def changes(self, start: str = "-", count: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Changes in the stream from ``start`` (an entry id, ``-`` = the oldest kept), oldest first."""
        entries = self._client.xrange(changes_key(self._prefix), min=start, count=count)
        return [(entry_id.decode(), decode_change(fields)) for entry_id, fields in entries]

    def follow(self, last_id: str = "$", block_ms: int = 5_000) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield changes as they are appended (XREAD); ``last_id`` ``$`` = only new ones, ``0`` = from
        the oldest kept. Resume after a restart by passing the last id you processed."""
        while True:
            for entry in self.changes_after(last_id, block_ms):
                last_id = entry[0]
                yield entry

    def changes_after(self, last_id: str, block_ms: int, count: int = 500) -> list[tuple[str, dict[str, Any]]]:
        """The changes after entry ``last_id``, waiting up to ``block_ms`` for one (XREAD); [] if none came."""
        replies = self._client.xread({changes_key(self._prefix): last_id}, count=count, block=block_ms) or ()
        return [(entry_id.decode(), decode_change(fields)) for _, entries in replies for entry_id, fields in entries]

    def last_change_id(self) -> str:
        """The id of the newest change in the stream (``0-0`` if there is none): where a reader
        that wants only new changes starts."""
        newest = self._client.xrevrange(changes_key(self._prefix), count=1)
        return newest[0][0].decode() if newest else "0-0"

    def all_profiles(self, batch: int = 500) -> list[dict[str, Any]]:
        """Every profile under the prefix (SCAN, so it does not block the server)."""
        keys = self._client.scan_iter(match=profile_key_pattern(self._prefix), count=1000)
        out: list[dict[str, Any]] = []
        for chunk in batched(keys, batch):
            pipe = self._client.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
            out += [decode_profile(raw) for raw in pipe.execute() if raw]
        return out

    def delete_all(self) -> int:
        """Remove every key under the prefix (demo and test resets)."""
        deleted = 0
        for chunk in batched(self._client.scan_iter(match=f"{self._prefix}:*", count=1000), 1000):
            deleted += self._client.unlink(*chunk)
        return deleted
