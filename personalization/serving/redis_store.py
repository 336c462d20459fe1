"""The Redis key schema (contract v1) and the versioned, idempotent profile write.

Key schema (``<prefix>`` defaults to ``pz:v1``; ``{<user>}`` is a Redis Cluster hash tag, so
all keys of one user live in one slot and one script can touch them atomically):

- ``<prefix>:{<user>}:profile``  hash, one field per profile attribute (JSON-encoded values)
  plus ``version`` (per-user, increases with every applied update) and ``updated_at``
  (wall-clock ms of the write: the only field that differs between two runs of the same input).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis

from personalization.config.settings import RedisConfig, redis_password

log = logging.getLogger(__name__)

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
    """Writes profiles with the compare-and-set script; one instance per parallel task.

    While Redis is unreachable the write is retried with exponential backoff, forever: the
    operator blocks, Flink back-pressures the sources, and nothing is dropped. The job catches
    up when Redis returns (the script is re-loaded automatically after a restart).
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int, backoff_max_ms: int = 5_000) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = ttl_ms
        self._backoff_max_s = backoff_max_ms / 1000
        self._script = client.register_script(_APPLY_PROFILE)

    def write(self, profile: dict[str, Any]) -> bool:
        """True if applied, False if Redis already holds this or a newer version."""
        key = profile_key(self._prefix, profile["user_id"])
        fields = encode_profile(profile)
        attempt = 0
        while True:
            try:
                args = [profile["version"], self._ttl_ms, b"updated_at", int(time.time() * 1000)]
                return bool(self._script(keys=[key], args=args + fields))
            except redis.AuthenticationError:
                raise
            except (redis.ConnectionError, redis.TimeoutError) as err:
                delay = min(self._backoff_max_s, 0.05 * 2**attempt)
                attempt += 1
                log.warning("redis unavailable (%s): retry %d in %.2f s; back-pressuring, nothing dropped",
                            err, attempt, delay)
                time.sleep(delay)


def connect(config: RedisConfig) -> redis.Redis:
    """A client for the configured server; fails fast with a clear message on bad credentials."""
    client = redis.Redis(
        host=config.host, port=config.port, db=config.db,
        username=config.username or None, password=redis_password(),
        ssl=config.tls, ssl_ca_certs=config.tls_ca_file or None,
        socket_connect_timeout=5, socket_timeout=10,
    )
    return client


def check_connection(client: redis.Redis, config: RedisConfig) -> None:
    """Raise a readable error for refused credentials, naming where the secret comes from
    (never the secret itself)."""
    where = f"redis {config.host}:{config.port}"
    try:
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError) as err:
        if isinstance(err, redis.ResponseError) and "NOAUTH" not in str(err):
            raise
        if redis_password() is None:
            raise PermissionError(f"{where}: a password is required: set PZ_REDIS_PASSWORD "
                                  "or PZ_REDIS_PASSWORD_FILE") from None
        raise PermissionError(f"{where}: authentication failed for user {config.username or 'default'!r} "
                              "(password from PZ_REDIS_PASSWORD/PZ_REDIS_PASSWORD_FILE)") from None
