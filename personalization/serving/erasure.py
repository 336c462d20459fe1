"""Erasing a user from Redis: every key of the key schema (``serving.redis_store``) that names the user,
found through the user's two index keys, so an erasure reads no key of anyone else (no ``SCAN``).

- ``<prefix>:{<user>}:profile`` and ``<prefix>:{<user>}:predictions`` (deleted),
- ``<prefix>:{<user>}:recommendations`` (replaced by a tombstone that keeps only its version, for
  as long as the key had to live: an answer computed before the erasure and still held back by the
  job is then refused; the job's recommender leaves the same tombstone, see ``serving.reco_store``),
- ``<prefix>:{segment-changes}:user:<user>`` (the stream's deduplication mark, deleted),
- ``<prefix>:{<user>}:alias`` (an anonymous id's alias, deleted; the user operator erases each
  anonymous id stitched into an erased user's profile too, see ``core.identity``),
- the user's entries in the change stream ``<prefix>:{segment-changes}`` (``XDEL`` of the ids
  listed in ``<prefix>:{segment-changes}:entries:<user>``),
- the user's membership of every audience set the user ever entered (``SREM`` on the sets of the
  segments in ``<prefix>:{<user>}:segments``: a set of a segment a rules update removed still counts),
- the user's field in the outcome hash of every experiment the user was exposed to (the caller
  names them: the user operator reads them from the user's state),
- then the two index keys.

Three round trips whatever the size of Redis: the indexes are read, one pipeline removes what
they name, and a last one deletes the indexes, so an erasure cut short (Redis lost mid-pipeline)
finds them again when it is retried (the indexes get a round trip of their own because on a
Redis Cluster a pipeline's commands to different nodes are sent in parallel, in no order). Every
step is idempotent, so an erasure repeated after a restore deletes nothing more and fails nothing;
the whole erasure is retried while Redis is down (``retry_while_down``). The shared model hash
(``<prefix>:model``) names no user. Keys written before the indexes existed are indexed once by
``index_existing`` (docs/redis.md, key schema migration).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import redis

from personalization.serving.redis_store import (
    alias_key, batched, changes_key, entries_index_key, experiment_key, members_key, members_key_pattern,
    predictions_key, profile_key, recommendations_key, retry_while_down, segment_of, segments_index_key,
    streamed_version_key, tombstone,
)

XDEL_CHUNK = 1_000  # stream ids per XDEL command
STREAM_PAGE = 10_000  # stream entries read per round trip by index_existing


def user_keys(prefix: str, user_id: str) -> list[str]:
    """The keys that belong to the user alone, the two index keys last."""
    return [profile_key(prefix, user_id), predictions_key(prefix, user_id), recommendations_key(prefix, user_id),
            streamed_version_key(prefix, user_id), alias_key(prefix, user_id), segments_index_key(prefix, user_id),
            entries_index_key(prefix, user_id)]


def erase_user(client: redis.Redis, prefix: str, user_id: str, backoff_max_ms: int = 5_000,
               experiments: Iterable[str] = ()) -> int:
    """Remove the user from Redis; the number of keys (the index keys too), stream entries, set
    memberships and experiment records removed."""
    return retry_while_down(lambda: _erase(client, prefix, user_id, tuple(experiments)), backoff_max_ms)


def _erase(client: redis.Redis, prefix: str, user_id: str, experiments: tuple[str, ...]) -> int:
    read = client.pipeline(transaction=False)
    read.smembers(segments_index_key(prefix, user_id))
    read.lrange(entries_index_key(prefix, user_id), 0, -1)
    segments, entries = read.execute()
    pipe = client.pipeline(transaction=False)
    for segment in segments:
        pipe.srem(members_key(prefix, segment.decode()), user_id)
    for chunk in batched(entries, XDEL_CHUNK):
        pipe.xdel(changes_key(prefix), *chunk)
    for experiment in experiments:
        pipe.hdel(experiment_key(prefix, experiment), user_id)
    *data_keys, segments_index, entries_index = user_keys(prefix, user_id)
    for key in data_keys:
        if key == recommendations_key(prefix, user_id):
            tombstone(pipe, key, 0)
        else:
            pipe.delete(key)
    removed = sum(pipe.execute())
    last = client.pipeline(transaction=False)  # after the rest: a retry after a cut finds it again
    last.delete(segments_index)
    last.delete(entries_index)  # one key per DEL: the two live in different slots
    return removed + sum(last.execute())


def index_existing(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """Build the erasure indexes of keys written before them (run once, job stopped): every
    audience set's members get its segment in their ``:segments`` set, and every stream entry's id
    is listed under its user, oldest first. Idempotent (the lists are rewritten whole). Returns
    (memberships, stream entries) indexed."""
    memberships = 0
    for key in client.scan_iter(match=members_key_pattern(prefix), count=1_000):
        segment = segment_of(key.decode(), prefix)
        for chunk in batched(client.sscan_iter(key, count=1_000), 1_000):
            pipe = client.pipeline(transaction=False)
            for member in chunk:
                pipe.sadd(segments_index_key(prefix, member.decode()), segment)
            pipe.execute()
            memberships += len(chunk)
    ids: dict[str, list[bytes]] = defaultdict(list)
    start = "-"
    while page := client.xrange(changes_key(prefix), min=start, max="+", count=STREAM_PAGE):
        for entry_id, fields in page:
            ids[fields[b"user_id"].decode()].append(entry_id)
        start = b"(" + page[-1][0]
    for chunk in batched(ids.items(), 1_000):
        pipe = client.pipeline(transaction=False)
        for user, entry_ids in chunk:
            pipe.delete(entries_index_key(prefix, user))
            pipe.rpush(entries_index_key(prefix, user), *entry_ids)
        pipe.execute()
    return memberships, sum(map(len, ids.values()))
