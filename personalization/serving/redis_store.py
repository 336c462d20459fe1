"""The Redis key schema (contract v1) and the versioned, idempotent profile write.

Key schema (``<prefix>`` defaults to ``pz:v1``; ``{<user>}`` is a Redis Cluster hash tag, so
all keys of one user live in one slot and one script can touch them atomically):

- ``<prefix>:{<user>}:profile``  hash, one field per profile attribute (JSON-encoded values)
  plus ``version`` (per-user, increases with every applied update) and ``updated_at``
  (wall-clock ms of the write: the only field that differs between two runs of the same input).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

# Compare-and-set in one server-side step: a write whose version is not newer than the stored
# one is refused, so a replay after recovery can never move a profile backwards.
_APPLY_PROFILE = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'version'))
local incoming = tonumber(ARGV[1])
if stored and stored >= incoming then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def profile_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:{{{user_id}}}:profile"


def encode_profile(profile: dict[str, Any]) -> list[bytes]:
    """Flatten to HSET arguments; every value is JSON so readers in any language can decode it."""
    fields: list[bytes] = []
    for name, value in profile.items():
        if name != "version":
            fields += [name.encode(), orjson.dumps(value)]
    return fields


def decode_profile(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {name.decode(): orjson.loads(value) for name, value in raw.items()}


class ProfileWriter:
    """Writes profiles with the compare-and-set script; one instance per parallel task."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = ttl_ms
        self._script = client.register_script(_APPLY_PROFILE)

    def write(self, profile: dict[str, Any]) -> bool:
        """True if applied, False if Redis already holds this or a newer version."""
        args = [profile["version"], self._ttl_ms, b"updated_at", int(time.time() * 1000)]
        applied = self._script(keys=[profile_key(self._prefix, profile["user_id"])],
                               args=args + encode_profile(profile))
        return bool(applied)


def connect(host: str, port: int, db: int, password: str | None) -> redis.Redis:
    return redis.Redis(host=host, port=port, db=db, password=password,
                       socket_connect_timeout=5, socket_timeout=10)
