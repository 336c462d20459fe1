"""Ids that met other keys in Redis (issue 19, point 2): a job run over users whose raw ids made
one user's profile key another user's segment-change version key (v1: WRONGTYPE, the job failed).
With ids percent-encoded in keys both are profiled, with no restart allowed, and readable."""

from __future__ import annotations

import orjson

from personalization.pipelines.main import run_job
from personalization.replay.producer import RawRecord, produce_raw
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect, profile_key, streamed_version_key
from tests.support import isolated_settings

T = 1_511_658_000_000
X, Y = "segment-changes}:user:a", "a}:profile"  # v1: profile_key(X) == streamed_version_key(Y)
USERS = (X, Y, "{}:*", "日本 🙂", "%7B")


def test_ids_that_collided_in_v1_are_both_profiled_and_readable(stack, tmp_path):
    settings = isolated_settings(tmp_path, flink={"restart_attempts": 0})  # any exception fails the run
    prefix = settings.redis.key_prefix
    assert f"{prefix}:{{{X}}}:profile" == f"{prefix}:{{segment-changes}}:user:{Y}"  # the v1 key names met
    # three product views in a minute each: every user enters high_intent (a change: a version key)
    records = [RawRecord(orjson.dumps({"schema_version": 1, "event_id": f"{n}-{i}", "event_type": "product_view",
                                       "ts": T + i * 10_000 + n, "user_id": user, "item_id": "i1",
                                       "category_id": "c1"}), user.encode(), T + i * 10_000 + n)
               for i in range(3) for n, user in enumerate(USERS)]
    produce_raw(records, settings.kafka.bootstrap_servers, settings.kafka.topics.events, partitioner=0,
                progress=False)
    run_job(settings)

    reader = ProfileReader.from_settings(settings)
    for user in USERS:
        profile = reader.get(user)
        assert profile is not None and (profile["user_id"], profile["events_total"]) == (user, 3), user
        assert "high_intent" in reader.segments(user)["segments"], user
    assert reader.members("high_intent") == set(USERS)
    assert {p["user_id"] for p in reader.all_profiles()} == set(USERS)
    client = connect(settings.redis)
    assert client.type(profile_key(prefix, X)) == b"hash"
    assert client.type(streamed_version_key(prefix, Y)) == b"string"

