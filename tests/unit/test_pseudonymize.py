"""Keyed pseudonyms: stable per key, different across keys, and the key never shows."""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import re

import pytest

from personalization.udfs.pseudonymize import DEFAULT_KEY_ENV, MIN_KEY_BYTES, PseudonymKeyError, Pseudonymizer

KEY = "k3y-0f-the-test-suite-0123456789abcdef"  # 38 bytes
OTHER_KEY = "another-key-of-the-test-suite-0123456789"
ENV = "PZ_TEST_PSEUDONYM_KEY"


@pytest.fixture
def pseudonymize(monkeypatch: pytest.MonkeyPatch) -> Pseudonymizer:
    monkeypatch.setenv(ENV, KEY)
    return Pseudonymizer(ENV)


def test_stable_output_for_a_given_key(pseudonymize: Pseudonymizer) -> None:
    expected = "p_" + hmac.new(KEY.encode(), b"tb-543462", hashlib.sha256).hexdigest()[:32]
    assert pseudonymize("tb-543462") == expected
    assert pseudonymize("tb-543462") == expected  # the per-call copy leaves the keyed state untouched
    assert re.fullmatch(r"p_[0-9a-f]{32}", expected)
    assert pseudonymize("tb-543463") != expected


def test_different_keys_give_different_ids(pseudonymize: Pseudonymizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PZ_TEST_OTHER_KEY", OTHER_KEY)
    assert Pseudonymizer("PZ_TEST_OTHER_KEY")("tb-543462") != pseudonymize("tb-543462")


def test_default_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_KEY_ENV, KEY)
    monkeypatch.setenv(ENV, KEY)
    assert Pseudonymizer()("alice") == Pseudonymizer(ENV)("alice")


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(PseudonymKeyError, match=ENV):
        Pseudonymizer(ENV)
    monkeypatch.setenv(ENV, "")
    with pytest.raises(PseudonymKeyError, match=ENV):
        Pseudonymizer(ENV)


def test_short_key_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "s3cr3t-but-too-short"
    assert len(short) < MIN_KEY_BYTES
    monkeypatch.setenv(ENV, short)
    with pytest.raises(PseudonymKeyError) as caught:
        Pseudonymizer(ENV)
    assert ENV in str(caught.value)
    assert short not in str(caught.value) and short not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_the_key_is_not_in_repr_str_pickle_or_errors(pseudonymize: Pseudonymizer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("test").warning("using %s / %r", pseudonymize, pseudonymize)
    assert KEY not in caplog.text
    assert ENV in repr(pseudonymize)
    for text in (repr(pseudonymize), str(pseudonymize), f"{pseudonymize}"):
        assert KEY not in text
    assert KEY.encode() not in pickle.dumps(pseudonymize)
    with pytest.raises(AttributeError) as caught:
        _ = pseudonymize.key  # type: ignore[attr-defined]
    assert KEY not in str(caught.value)
    with pytest.raises(AttributeError):
        _ = pseudonymize.__dict__  # slots: no place for a stray copy of the key
    with pytest.raises((TypeError, AttributeError)) as caught:
        pseudonymize(None)  # type: ignore[arg-type]
    assert KEY not in str(caught.value)


def test_unpickling_reads_the_key_from_the_receiving_environment(pseudonymize: Pseudonymizer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a TaskManager: the same variable yields the same pseudonyms, and a missing one fails loudly."""
    shipped = pickle.dumps(pseudonymize)
    assert pickle.loads(shipped)("alice") == pseudonymize("alice")
    monkeypatch.delenv(ENV)
    with pytest.raises(PseudonymKeyError, match=ENV):
        pickle.loads(shipped)
