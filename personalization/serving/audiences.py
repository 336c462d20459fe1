"""Audience sets without the users whose profile expired.

Profiles expire ``redis.profile_ttl`` after their last write; audience sets
(``<prefix>:segment:{<segment>}:members``) have no TTL (a member leaves by an exit change), so a user
who stopped coming would stay in them for ever. ``expire_audiences`` removes every member whose
profile key no longer exists, and the segment from the member's erasure index (``{<user>}:segments``).
The sweeper runs it beside the job (``pz expire-audiences --every 1h``, the ``audience-sweeper``
service of ``docker/compose.yaml``).
"""

from __future__ import annotations

import redis

from personalization.serving.redis_store import (
    batched, members_key_pattern, profile_key, segment_of, segments_index_key,
)

CHUNK = 1_000  # members checked per round trip


def expire_audiences(client: redis.Redis, prefix: str) -> int:
    """Remove from every audience set the members without a profile; how many were removed.

    One ``SCAN`` of the audience sets (there are few), then per set an ``SSCAN`` and a pipelined
    ``EXISTS`` per member. Not atomic with the job's writes (on a cluster a set and a profile are in
    different slots): a user whose profile is written again between the check and the removal is
    out of the audience until their next entry."""
    removed = 0
    for key in client.scan_iter(match=members_key_pattern(prefix), count=CHUNK):
        segment = segment_of(key.decode(), prefix)
        for members in batched(client.sscan_iter(key, count=CHUNK), CHUNK):
            check = client.pipeline(transaction=False)
            for member in members:
                check.exists(profile_key(prefix, member.decode()))
            gone = [member for member, exists in zip(members, check.execute()) if not exists]
            if gone:
                pipe = client.pipeline(transaction=False)
                pipe.srem(key, *gone)
                for member in gone:
                    pipe.srem(segments_index_key(prefix, member.decode()), segment)
                removed += pipe.execute()[0]
    return removed
