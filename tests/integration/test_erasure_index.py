"""Erasure without a keyspace scan (issue 19, point 6), on a private real redis-server where the
eraser's ACL user may not run SCAN or KEYS: the user's index keys name every key, audience set and
stream entry to remove; the other users keep theirs; the index of the stream never outgrows it;
keys written before the indexes are indexed by ``index_existing`` and then erased alike."""

from __future__ import annotations

import pytest
import redis

from personalization.serving.erasure import erase_user, index_existing, user_keys
from personalization.serving.redis_store import (
    ProfileWriter, changes_key, entries_index_key, members_key, predictions_key, segments_index_key,
)
from tests.support import RedisServer

PREFIX = "pz:v2"
USERS = ("tb-1", "{}:*", "日本 🙂", "%7B", "", "segment-changes}:user:a")


@pytest.fixture
def server(tmp_path):
    # small stream nodes, so that MAXLEN ~ trims a short stream
    redis_server = RedisServer(tmp_path / "redis", "--stream-node-max-entries", "4").start()
    yield redis_server
    redis_server.stop()


@pytest.fixture
def clients(server):
    admin = redis.Redis(port=server.port)
    admin.acl_setuser("eraser", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-scan", "-keys"])
    eraser = redis.Redis(port=server.port, username="eraser", password="pw")
    with pytest.raises(redis.exceptions.NoPermissionError):
        eraser.scan()
    yield admin, eraser
    admin.close()
    eraser.close()


def change(user: str, seq: int, segment: str, action: str) -> dict:
    return {"user_id": user, "segment": segment, "action": action, "seq": seq, "event_time": seq,
            "rules_version": "v", "cause": {"rule": f"{segment}.{action}", "features": {}}}


def write_users(admin: redis.Redis, stream_maxlen: int = 1_000) -> ProfileWriter:
    """Each user: profile, enters a and b, leaves a (a's set no longer holds them, the index still names a)."""
    writer = ProfileWriter(admin, PREFIX, ttl_ms=60_000, stream_maxlen=stream_maxlen)
    for user in USERS:
        assert writer.write({"user_id": user, "version": 1}, [change(user, 1, "a", "enter"), change(user, 2, "b", "enter")])
        assert writer.write({"user_id": user, "version": 2}, [change(user, 3, "a", "exit")])
        admin.hset(predictions_key(PREFIX, user), "propensity", 1)
    return writer


def traces(admin: redis.Redis, user: str) -> dict:
    return {"keys": [key for key in user_keys(PREFIX, user) if admin.exists(key)],
            "sets": [s for s in ("a", "b") if admin.sismember(members_key(PREFIX, s), user)],
            "entries": [i for i, f in admin.xrange(changes_key(PREFIX)) if f[b"user_id"] == user.encode()]}


def test_an_erasure_removes_exactly_the_users_keys_without_scanning(clients):
    admin, eraser = clients
    write_users(admin)
    erased, others = USERS[1], [u for u in USERS if u != USERS[1]]
    before = {user: traces(admin, user) for user in USERS}
    assert len(before[erased]["keys"]) == 5 and before[erased]["sets"] == ["b"] and len(before[erased]["entries"]) == 3

    removed = erase_user(eraser, PREFIX, erased)

    # profile, predictions, version mark, the two index keys; membership of b; three entries
    assert removed == 5 + 1 + 3
    assert traces(admin, erased) == {"keys": [], "sets": [], "entries": []}
    assert {user: traces(admin, user) for user in others} == {user: before[user] for user in others}
    assert erase_user(eraser, PREFIX, erased) == 0  # idempotent


def test_the_entries_index_holds_only_ids_the_stream_still_has(clients):
    admin, _ = clients
    writer = ProfileWriter(admin, PREFIX, ttl_ms=0, stream_maxlen=8)
    for seq in range(1, 61):
        writer.write({"user_id": "hot", "version": seq}, [change("hot", seq, "a", "enter" if seq % 2 else "exit")])
    in_stream = [entry_id for entry_id, _ in admin.xrange(changes_key(PREFIX))]
    assert len(in_stream) < 60  # the stream was trimmed
    assert admin.lrange(entries_index_key(PREFIX, "hot"), 0, -1) == in_stream
    assert admin.smembers(segments_index_key(PREFIX, "hot")) == {b"a"}


def test_keys_written_before_the_index_are_indexed_and_then_erased(clients):
    admin, eraser = clients
    write_users(admin)
    indexes = {user: (admin.smembers(segments_index_key(PREFIX, user)),
                      admin.lrange(entries_index_key(PREFIX, user), 0, -1)) for user in USERS}
    for user in USERS:  # as written before the indexes existed
        admin.delete(segments_index_key(PREFIX, user), entries_index_key(PREFIX, user))
    # the set of a is empty (every user left it): only b's memberships remain to index
    assert index_existing(admin, PREFIX) == (len(USERS), 3 * len(USERS))
    assert index_existing(admin, PREFIX) == (len(USERS), 3 * len(USERS))  # idempotent
    for user in USERS:
        segments, entries = indexes[user]
        assert admin.smembers(segments_index_key(PREFIX, user)) == {b"b"} and b"a" in segments
        assert admin.lrange(entries_index_key(PREFIX, user), 0, -1) == entries
    assert erase_user(eraser, PREFIX, USERS[0]) == 5 + 1 + 3
    assert traces(admin, USERS[0]) == {"keys": [], "sets": [], "entries": []}


def test_members_whose_profile_expired_leave_the_audiences(clients, server):
    from personalization.serving.audiences import expire_audiences
    from personalization.serving.redis_store import profile_key

    admin, _ = clients
    write_users(admin)
    gone, kept = USERS[:2], USERS[2:]
    for user in gone:  # what redis.profile_ttl does
        admin.delete(profile_key(PREFIX, user))
    assert expire_audiences(admin, PREFIX) == len(gone)  # each was in b only
    assert {m.decode() for m in admin.smembers(members_key(PREFIX, "b"))} == set(kept)
    assert all(admin.smembers(segments_index_key(PREFIX, user)) == {b"a"} for user in gone)
    assert all(admin.smembers(segments_index_key(PREFIX, user)) == {b"a", b"b"} for user in kept)
    assert expire_audiences(admin, PREFIX) == 0


def test_erased_recommendations_leave_a_tombstone_that_refuses_answers_computed_before(clients):
    from personalization.core.recommend.stream import Recommendations
    from personalization.serving.reco_store import RecommendationWriter, read_recommendations
    from personalization.serving.redis_store import recommendations_key

    admin, eraser = clients
    user, other = USERS[1], USERS[0]
    writer = RecommendationWriter(admin, PREFIX, ttl_ms=60_000)

    def answer(who: str, version: int) -> Recommendations:
        return Recommendations(who, version, [{"item": f"i{version}", "source": "co-view"}], "coview-knn@1", "x", version)

    writer.write_many([answer(user, 3), answer(other, 3)])
    assert read_recommendations(admin, PREFIX, user)["version"] == 3

    assert erase_user(eraser, PREFIX, user) == 1   # the recommendations (the user has nothing else here)
    key = recommendations_key(PREFIX, user)
    assert admin.hgetall(key) == {b"version": b"3"} and 0 < admin.pttl(key) <= 60_000
    assert read_recommendations(admin, PREFIX, user) is None
    writer.write_many([answer(user, 3)])   # an answer held back before the erasure, written after it
    assert read_recommendations(admin, PREFIX, user) is None
    assert erase_user(eraser, PREFIX, user) == 0   # idempotent: the tombstone stays as it was
    assert admin.hgetall(key) == {b"version": b"3"}

    # the recommender's own tombstone raises the floor to the user's newest request
    RecommendationWriter(eraser, PREFIX, ttl_ms=60_000).erase(user, 5)
    writer.write_many([answer(user, 5)])
    assert read_recommendations(admin, PREFIX, user) is None
    writer.write_many([answer(user, 6)])   # the first request after the erasure
    assert read_recommendations(admin, PREFIX, user)["items"] == [{"item": "i6", "source": "co-view"}]
    assert read_recommendations(admin, PREFIX, other)["version"] == 3   # untouched

    # nothing to hide, nothing written: no key, and no answer can be on its way
    assert erase_user(eraser, PREFIX, "never-recommended") == 0
    assert not admin.exists(recommendations_key(PREFIX, "never-recommended"))
