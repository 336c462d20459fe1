"""The signature-checking receiver (the demo's, and the reference for receivers) against real
signed requests over loopback."""

from __future__ import annotations

import time

import httpx

from personalization.activation.receiver import SignedReceiver, verified
from personalization.activation.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature


def post(url: str, body: bytes, secret: bytes, key: str, at: int | None = None) -> int:
    timestamp = str(int(time.time()) if at is None else at)
    headers = {IDEMPOTENCY_HEADER: key, TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


def test_signed_requests_are_taken_once_per_key_and_anything_else_is_refused() -> None:
    receiver = SignedReceiver(b"s3cret")
    try:
        assert post(receiver.url, b'{"a":1}', b"s3cret", "u:1") == 200
        assert post(receiver.url, b'{"a":1}', b"s3cret", "u:1") == 200  # a retry: kept once
        assert post(receiver.url, b'{"b":2}', b"wrong", "u:2") == 401
        assert post(receiver.url, b'{"c":3}', b"s3cret", "u:3", at=int(time.time()) - 3_600) == 401  # replayed
        assert [(d.key, d.body) for d in receiver.deliveries()] == [("u:1", b'{"a":1}')]
        assert receiver.refused == 2
    finally:
        receiver.close()


def test_verification_refuses_a_tampered_body_or_a_bad_timestamp() -> None:
    now = str(int(time.time()))
    good = signature(b"k", now, b"body")
    assert verified(b"k", now, good, b"body")
    assert not verified(b"k", now, good, b"body!")
    assert not verified(b"k", "soon", good, b"body")
