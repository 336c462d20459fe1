"""Keyed pseudonyms for user ids: HMAC-SHA256 under a secret taken from the environment.

A plain hash of a user id can be reversed by hashing candidate ids; a keyed hash cannot without
the key, and the same id always maps to the same pseudonym, so profiles, sessions and joins keep
working. The output is ``p_`` + 32 hex characters (128 bits: collisions stay negligible even
for billions of users), recognisable as a pseudonym and valid wherever a user id is.

The key lives only inside the HMAC state of a :class:`Pseudonymizer`. It is not in its repr, in
any error message (they name the variable, never the value), or in its pickle: pickling keeps
only the variable's name, so a Flink job graph carries no secret and each TaskManager reads the
key from its own environment when the function is unpickled there.
"""

from __future__ import annotations

import hashlib
import hmac
import os

DEFAULT_KEY_ENV = "PZ_PSEUDONYM_KEY"
MIN_KEY_BYTES = 32  # RFC 2104: a key shorter than the hash output (32 bytes for SHA-256) weakens the MAC
PREFIX = "p_"
HEX_CHARS = 32


class PseudonymKeyError(RuntimeError):
    """The key is missing or too short; the message names the variable, never its value."""


class Pseudonymizer:
    """Maps a user id to its pseudonym; built from the name of the variable that holds the key."""

    __slots__ = ("_env_var", "_mac")

    def __init__(self, env_var: str = DEFAULT_KEY_ENV) -> None:
        self._env_var = env_var
        self._mac = hmac.new(_read_key(env_var), digestmod=hashlib.sha256)

    def __call__(self, user_id: str) -> str:
        mac = self._mac.copy()  # the keyed state is computed once; a copy per id is cheaper than a new HMAC
        mac.update(user_id.encode("utf-8"))
        return PREFIX + mac.hexdigest()[:HEX_CHARS]

    def __repr__(self) -> str:
        return f"Pseudonymizer(key from ${self._env_var})"

    def __reduce__(self) -> tuple[type[Pseudonymizer], tuple[str]]:
        """Pickle the variable's name, not the key: the unpickling process reads its own environment."""
        return (Pseudonymizer, (self._env_var,))


def _read_key(env_var: str) -> bytes:
    """The key's bytes, checked; ``os.fsencode`` cannot fail on POSIX, so no error quotes the value."""
    value = os.environ.get(env_var)
    if not value:
        raise PseudonymKeyError(f"pseudonymization key missing: set the environment variable {env_var}")
    key = os.fsencode(value)
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(f"pseudonymization key in {env_var} is too short: it needs at least "
                                f"{MIN_KEY_BYTES} bytes (e.g. the output of `openssl rand -hex 32`)")
    return key
