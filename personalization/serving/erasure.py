"""Erasing a user from Redis: every key of the key schema (``serving.redis_store``) that names the user.

- ``<prefix>:{<user>}:profile`` and ``<prefix>:{<user>}:predictions`` (deleted),
- ``<prefix>:{segment-changes}:user:<user>`` (the stream's deduplication mark, deleted),
- ``<prefix>:{<user>}:alias`` (an anonymous id's alias, deleted; the user operator erases each
  anonymous id stitched into an erased user's profile too, see ``core.identity``),
- the user's entries in the change stream ``<prefix>:{segment-changes}`` (``XDEL``),
- the user's membership of every audience set ``<prefix>:segment:{<segment>}:members`` (``SREM``
  on every such set, found by ``SCAN``: a set of a segment a rules update removed still counts).

Every step is idempotent, so an erasure repeated after a restore deletes nothing more and fails
nothing; the whole erasure is retried while Redis is down (``retry_while_down``). The shared
model hash (``<prefix>:model``) names no user.
"""

from __future__ import annotations

import redis

from personalization.serving.redis_store import (
    alias_key, changes_key, members_key_pattern, predictions_key, profile_key, retry_while_down, streamed_version_key,
)

STREAM_PAGE = 1_000  # change-stream entries read per round trip while looking for the user's


def user_keys(prefix: str, user_id: str) -> list[str]:
    """The keys that belong to the user alone."""
    return [profile_key(prefix, user_id), predictions_key(prefix, user_id), streamed_version_key(prefix, user_id),
            alias_key(prefix, user_id)]


def erase_user(client: redis.Redis, prefix: str, user_id: str, backoff_max_ms: int = 5_000) -> int:
    """Remove the user from Redis; the number of keys, stream entries and set memberships removed."""
    return retry_while_down(lambda: _erase(client, prefix, user_id), backoff_max_ms)


def _erase(client: redis.Redis, prefix: str, user_id: str) -> int:
    removed = sum(client.delete(key) for key in user_keys(prefix, user_id))
    for key in client.scan_iter(match=members_key_pattern(prefix), count=1_000):  # every audience set
        removed += client.srem(key, user_id)
    return removed + _erase_changes(client, changes_key(prefix), user_id.encode())


def _erase_changes(client: redis.Redis, stream: str, user: bytes) -> int:
    removed, start = 0, "-"
    while True:
        page = client.xrange(stream, min=start, max="+", count=STREAM_PAGE)
        if not page:
            return removed
        ids = [entry_id for entry_id, fields in page if fields.get(b"user_id") == user]
        if ids:
            removed += client.xdel(stream, *ids)
        start = b"(" + page[-1][0]
