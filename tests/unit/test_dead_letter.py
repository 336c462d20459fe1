"""The dead-letter format (personalization.core.dead_letter): original bytes as the value, the rest
in headers that stay within the DLQ topic's headroom whatever the record and its rejection hold."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personalization.core.dead_letter import (
    HEADROOM_BYTES, MAX_EXTRA_HEADERS, MAX_HEADER_BYTES, DeadLetter, DeadLetterError, dlq_max_message_bytes,
)

NOW = 1_795_461_137_107
TS = 1_511_658_000_000
RECORD_OVERHEAD = 128  # a Kafka record's own fields (lengths, attributes, deltas, key) at most
HEADER_OVERHEAD = 10   # the two varint lengths of one header


def headers_size(letter: DeadLetter) -> int:
    return sum(len(name.encode()) + len(value) + HEADER_OVERHEAD for name, value in letter.headers().items())


def test_a_megabyte_of_random_bytes_is_kept_whole_and_the_headers_stay_small() -> None:
    raw = os.urandom(1 << 20)
    letter = DeadLetter(raw, "too_large", f"{len(raw)} bytes > limit 65536", "events", NOW, None, 3, 2**62, TS)
    again = DeadLetter.from_wire(letter.to_wire())
    assert again.value == raw
    assert again == letter
    assert DeadLetter.from_headers(raw, letter.headers().items()) == letter
    assert headers_size(letter) < 400


def test_the_worst_headers_fit_the_headroom() -> None:
    """Every text as long as it can get: each header is cut, the total stays in HEADROOM_BYTES."""
    huge = "\u0001{}:*é" * 500_000
    letter = DeadLetter(os.urandom(10), huge, huge, "t" * 249, -2**63, huge, 2**31 - 1, -2**63, -2**63,
                        tuple((f"name{i}" * 20, huge) for i in range(MAX_EXTRA_HEADERS)))
    headers = letter.headers()
    assert all(len(value) <= MAX_HEADER_BYTES for value in headers.values())
    assert headers["dlq.detail"].decode("utf-8").endswith("…")  # cut between characters: still UTF-8
    assert headers_size(letter) + RECORD_OVERHEAD <= HEADROOM_BYTES
    assert dlq_max_message_bytes(1_048_588) == 1_048_588 + HEADROOM_BYTES
    with pytest.raises(ValueError, match="extra headers"):
        DeadLetter(b"", "r", "", "t", NOW, extra=tuple((f"n{i}", "x") for i in range(MAX_EXTRA_HEADERS + 1)))


@settings(max_examples=200, deadline=None)
# texts of at most 250 characters: 1,000 bytes of UTF-8 at most, so no header is cut
@given(value=st.binary(max_size=2_000), reason=st.text(min_size=1, max_size=50),
       detail=st.text(max_size=250), path=st.none() | st.text(max_size=250), topic=st.text(min_size=1, max_size=249),
       partition=st.none() | st.integers(0, 2**31 - 1), offset=st.none() | st.integers(0, 2**63 - 1),
       timestamp=st.none() | st.integers(-2**63, 2**63 - 1), rejected_at=st.integers(-2**63, 2**63 - 1))
def test_headers_read_back_to_the_same_dead_letter(value, reason, detail, path, topic, partition, offset,
                                                   timestamp, rejected_at) -> None:
    letter = DeadLetter(value, reason, detail, topic, rejected_at, path, partition, offset, timestamp,
                        (("running_rules_version", detail),))
    assert DeadLetter.from_headers(value, letter.headers().items()) == letter
    assert DeadLetter.from_wire(letter.to_wire()) == letter


def test_text_that_is_not_valid_unicode_is_escaped_not_an_error() -> None:
    letter = DeadLetter(b"x", "invalid_rules", "bad \udcff", "rules", NOW)
    assert letter.headers()["dlq.detail"] == b"bad \\udcff"


def test_records_that_are_not_dead_letters_are_named_errors() -> None:
    good = DeadLetter(b"v", "not_json", "d", "events", NOW, partition=1, offset=2, timestamp=TS).headers()
    with pytest.raises(DeadLetterError, match="missing header.*dlq.reason"):
        DeadLetter.from_headers(b"v", [(k, v) for k, v in good.items() if k != "dlq.reason"])
    with pytest.raises(DeadLetterError, match="missing header"):
        DeadLetter.from_headers(b'{"reason": "not_json"}', [])
    with pytest.raises(DeadLetterError, match="unreadable"):
        DeadLetter.from_headers(b"v", [*good.items(), ("dlq.offset", b"12x")])
    with pytest.raises(DeadLetterError, match="unreadable"):
        DeadLetter.from_headers(b"v", [*good.items(), ("dlq.detail", b"\xff")])
    # other headers (a producer's tracing) and null header values are ignored; a null value is b""
    letter = DeadLetter.from_headers(None, [*good.items(), ("traceparent", b"00-ab"), ("dlq.path", None)])
    assert (letter.value, letter.path, letter.offset, letter.extra) == (b"", None, 2, ())
