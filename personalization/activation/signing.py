"""Webhook signatures and ids: what a receiver needs to trust and deduplicate a delivery."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from urllib.parse import quote

TIMESTAMP_HEADER = "X-PZ-Timestamp"
SIGNATURE_HEADER = "X-PZ-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class SecretMissing(RuntimeError):
    """No signing secret in the environment: the service refuses to send unsigned webhooks."""


def change_id(user_id: str, seq: int) -> str:
    """``(user_id, seq)`` identifies a change; the user id is percent-encoded so the id is
    header-safe ASCII and splits unambiguously at its last ``:``."""
    return f"{quote(user_id, safe='')}:{seq}"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 over ``<timestamp>.<body>``: the timestamp is signed so a
    receiver can refuse replays of an old request."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def load_secret(env: str) -> bytes:
    """The secret from ``$<env>``, or from the file named by ``$<env>_FILE`` (never the config)."""
    path = os.environ.get(f"{env}_FILE")
    value = Path(path).read_text().strip() if path else os.environ.get(env, "")
    if not value:
        raise SecretMissing(f"no webhook secret: set {env} or {env}_FILE (a file holding it)")
    return value.encode()
