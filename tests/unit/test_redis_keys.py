"""The Redis key schema (personalization.serving.redis_store): ids are percent-encoded in keys, so
no id the contract allows gives another key's name, and each user's hash tag is the user's."""

from __future__ import annotations

from fnmatch import fnmatchcase
from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from personalization.serving.redis_store import (
    alias_key, changes_key, decode_id, encode_id, members_key, members_key_pattern, model_key, predictions_key,
    entries_index_key, profile_key, profile_key_pattern, segment_of, segments_index_key, streamed_version_key,
)

PREFIX = "pz:v2"
HOSTILE_IDS = [
    "", " ", "%", "%25", "%7B", "{", "}", "{}", "}{", ":", "::", "{}:*", "*", "?", "[a-z]", "\\", "a b",
    "segment-changes", "segment-changes}:user:a", "a}:profile", "a}:alias", "x}:predictions", "model",
    "segment:{s}:members", "s", "user:a", "é", "e\u0301", "日本語", "🙂", "\x00", "\n", "\udcff", "tb-543462",
    "p_0123456789abcdef", "x" * 10_000, "{" * 100 + "}" * 100,
]
GLOB_AND_TAG = set("{}:*?[]\\")


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first { and the next }, if not empty."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start + 1 else key


def keys_of(user: str) -> list[str]:
    return [profile_key(PREFIX, user), predictions_key(PREFIX, user), alias_key(PREFIX, user),
            streamed_version_key(PREFIX, user), members_key(PREFIX, user), segments_index_key(PREFIX, user),
            entries_index_key(PREFIX, user)]


def test_the_v1_collision_is_gone() -> None:
    """In v1 (ids raw) the profile key of one id was another id's stream-version key: WRONGTYPE."""
    x, y = "segment-changes}:user:a", "a}:profile"
    assert f"{PREFIX}:{{{x}}}:profile" == f"{PREFIX}:{{segment-changes}}:user:{y}"
    assert profile_key(PREFIX, x) != streamed_version_key(PREFIX, y)


def test_every_key_of_every_hostile_id_is_distinct() -> None:
    keys = [key for user in HOSTILE_IDS for key in keys_of(user)] + [changes_key(PREFIX), model_key(PREFIX)]
    assert len(set(keys)) == len(keys)


def test_encoded_ids_hold_no_tag_separator_or_glob_character_and_decode_back() -> None:
    for user in HOSTILE_IDS:
        encoded = encode_id(user)
        assert not GLOB_AND_TAG & set(encoded), user
        assert encoded and decode_id(encoded) == user
    assert encode_id("tb-543462") == "tb-543462"  # ordinary ids read as before
    assert encode_id("{}:*") == "%7B%7D%3A%2A" and encode_id("") == "%"


def test_a_users_keys_share_the_users_hash_tag() -> None:
    for user in HOSTILE_IDS:
        tags = {hash_tag(key) for key in (profile_key(PREFIX, user), predictions_key(PREFIX, user),
                                          alias_key(PREFIX, user), segments_index_key(PREFIX, user))}
        assert tags == {encode_id(user)}, user
    assert (hash_tag(streamed_version_key(PREFIX, "{}")) == hash_tag(entries_index_key(PREFIX, "{}"))
            == hash_tag(changes_key(PREFIX)) == "segment-changes")  # one script writes the three
    for a, b in combinations(["a", "{a}", "a}", "{a"], 2):
        assert hash_tag(profile_key(PREFIX, a)) != hash_tag(profile_key(PREFIX, b))


def test_patterns_match_exactly_their_kind_of_key() -> None:
    for user in HOSTILE_IDS:
        assert fnmatchcase(profile_key(PREFIX, user), profile_key_pattern(PREFIX))
        assert fnmatchcase(members_key(PREFIX, user), members_key_pattern(PREFIX))
        assert segment_of(members_key(PREFIX, user), PREFIX) == user
        for other in (predictions_key(PREFIX, user), alias_key(PREFIX, user), streamed_version_key(PREFIX, user),
                      segments_index_key(PREFIX, user), entries_index_key(PREFIX, user)):
            assert not fnmatchcase(other, profile_key_pattern(PREFIX))
            assert not fnmatchcase(other, members_key_pattern(PREFIX))
    assert fnmatchcase(profile_key(PREFIX, "probe-12"), profile_key_pattern(PREFIX, "probe-"))
    assert not fnmatchcase(profile_key(PREFIX, "user-12"), profile_key_pattern(PREFIX, "probe-"))


@settings(max_examples=500, deadline=None)
@given(a=st.text(), b=st.text())
def test_encoding_is_injective(a: str, b: str) -> None:
    assert decode_id(encode_id(a)) == a
    assert (encode_id(a) == encode_id(b)) == (a == b)
    assert (set(keys_of(a)) & set(keys_of(b))) == (set(keys_of(a)) if a == b else set())
