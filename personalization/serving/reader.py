"""Reader library for downstream apps: get profiles without knowing the key layout."""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterator

import redis

from personalization.config.settings import Settings
from personalization.serving.redis_store import connect, decode_profile, profile_key


class ProfileReader:
    def __init__(self, client: redis.Redis, prefix: str = "pz:v1") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> "ProfileReader":
        return cls(connect(settings.redis), settings.redis.key_prefix)

    def get(self, user_id: str) -> dict[str, Any] | None:
        raw = self._client.hgetall(profile_key(self._prefix, user_id))
        return decode_profile(raw) if raw else None

    def all_profiles(self, batch: int = 500) -> list[dict[str, Any]]:
        """Every profile under the prefix (SCAN, so it does not block the server)."""
        keys = self._client.scan_iter(match=profile_key(self._prefix, "*"), count=1000)
        out: list[dict[str, Any]] = []
        for chunk in _batched(keys, batch):
            pipe = self._client.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
            out += [decode_profile(raw) for raw in pipe.execute() if raw]
        return out

    def delete_all(self) -> int:
        """Remove every key under the prefix (demo and test resets)."""
        deleted = 0
        for chunk in _batched(self._client.scan_iter(match=f"{self._prefix}:*", count=1000), 1000):
            deleted += self._client.unlink(*chunk)
        return deleted


def _batched(iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk
