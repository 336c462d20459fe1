"""The API's plain-Python rules: ids, ETags, stream ids, key digests."""

from __future__ import annotations

import hashlib

import pytest

from personalization.config.settings import ApiConfig
from personalization.serving.api import ApiError, check_id, check_stream_id, load_key_digests, matches_etag


@pytest.mark.parametrize("user_id", ["a", "u:{x}*", "a" * 128, "ü" * 128])
def test_ids_of_the_contract_pass(user_id):
    assert check_id(user_id) == user_id


@pytest.mark.parametrize("user_id", ["", "a" * 129, "a" * 1_000_000])
def test_other_ids_are_400(user_id):
    with pytest.raises(ApiError) as err:
        check_id(user_id)
    assert err.value.status == 400 and "1 to 128" in err.value.message


@pytest.mark.parametrize("header, match", [('"3"', True), ('W/"3"', True), ('"1", "3"', True), ("*", True),
                                           ('"4"', False), ("", False), (None, False), ("3", False)])
def test_if_none_match(header, match):
    assert matches_etag(header, '"3"') is match


@pytest.mark.parametrize("value", ["0-0", "1700000000000-12"])
def test_stream_ids_pass(value):
    assert check_stream_id(value) == value


@pytest.mark.parametrize("value", ["", "$", "0", "-1-0", "1-", "{}:*", "١-٢", "1-2-3", "9" * 50 + "-1"])
def test_other_stream_ids_are_400(value):
    with pytest.raises(ApiError) as err:
        check_stream_id(value)
    assert err.value.status == 400


def test_keys_from_env_and_file_are_kept_as_digests(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("from-file\n\n  spaced  \n")
    monkeypatch.setenv("PZ_TEST_KEYS", "one, two,,")
    digests = load_key_digests(ApiConfig(keys_env="PZ_TEST_KEYS", keys_file=str(keys)))
    assert digests == {hashlib.sha256(k.encode()).digest() for k in ("one", "two", "from-file", "spaced")}


def test_no_keys_configured_means_none(monkeypatch):
    monkeypatch.delenv("PZ_TEST_KEYS", raising=False)
    assert load_key_digests(ApiConfig(keys_env="PZ_TEST_KEYS")) == frozenset()
