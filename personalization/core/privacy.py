"""Consent and erasure: whether a user's event may be profiled, and what an erasure leaves behind.

Consent is decided per user **in arrival order** (the order of the user's Kafka partition): it
is a fact about processing, not about event time. An event may state
``consent.personalization`` (``granted`` or ``denied``); the user's state records the latest
statement. An event without one takes the recorded statement, or the configured default
(``privacy.consent_default``) for a user who never stated one. Only granted events are profiled.

- A stated ``denied`` is a revocation: from that event on nothing of the user is profiled
  (the profile already built stays as it was until an erasure request removes it).
- A stated ``granted`` resumes profiling; after a revocation, on the kept profile; after an
  erasure (or for a user whose first word was a denial), on a fresh one.
- An erasure replaces the user's whole state by a ``Suppressed`` marker: the user counts as
  having denied consent, so later events recreate nothing until one states a grant.

Plain Python: the operator (``operators.user_profile``) keeps the state and carries this out.
The identity resolver (``core.identity``) applies the same rule (``ConsentRules.admits``) per
anonymous id, so that it holds for a later stitch only the events that were profiled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from personalization.core.events import Event
from personalization.core.evolvable import evolvable
from personalization.core.user import UserState

GRANTED, DENIED = "granted", "denied"
NOT_GRANTED, ERASED = "not_granted", "erased"  # reasons besides DENIED for not profiling an event
MAX_ID_CHARS = 128


@evolvable
@dataclass(slots=True)
class Suppressed:
    """All the job keeps of a user it must not profile and holds no profile of: the user's state
    after an erasure (with its request id and time) or after a first event that denied consent.
    Retained so that later events without a grant stay unprofiled (consent is not assumed back)."""

    request_id: str | None = None
    erased_at: int | None = None


Stored = UserState | Suppressed | None  # what the user operator holds for a user


class Admission(NamedTuple):
    state: UserState | None  # the state to give the event to; None: do not profile the event
    keep: Stored             # what to store for the user afterwards
    changed: bool            # ``keep`` differs from what was stored (it must be written)
    reason: str | None       # why the event is not profiled (DENIED, NOT_GRANTED, ERASED)
    revoked: bool            # this event revoked a consent (the user was profiled until now)


@dataclass(frozen=True, slots=True)
class ConsentRules:
    default: str = GRANTED  # an event without a consent field, from a user who never stated one

    def admits(self, recorded: str | None, stated: str | None = None) -> bool:
        """Whether an event stating ``stated`` (None: no field) is profiled, given the latest
        statement recorded for its id (None: never one; an erased id counts as ``denied``). The
        one rule both keepers of consent apply: the user operator and the identity resolver."""
        return (stated or recorded or self.default) == GRANTED

    def admit(self, stored: Stored, event: Event, new_state: Callable[[str], UserState]) -> Admission:
        stated = event.consent
        if isinstance(stored, UserState):
            recorded = stored.consent
        else:
            recorded = DENIED if isinstance(stored, Suppressed) else None
        granted = self.admits(recorded, stated)
        if isinstance(stored, UserState):
            changed = stated is not None and stated != stored.consent
            if changed:
                stored.consent = stated
            revoked = changed and stated == DENIED and self.admits(recorded)
            if granted:
                return Admission(stored, stored, changed, None, False)
            return Admission(None, stored, changed, _reason(stated or recorded), revoked)
        if granted:  # a first event, or a grant after an erasure or a denial: a fresh profile
            state = new_state(event.user_id)
            state.consent = stated
            # Kept even if the event changes nothing (late, say) when it replaces a marker or states a grant.
            return Admission(state, state, stored is not None or stated is not None, None, False)
        if stored is None and stated == DENIED:
            return Admission(None, Suppressed(), True, DENIED, False)
        erased = isinstance(stored, Suppressed) and stored.request_id is not None
        return Admission(None, stored, False, ERASED if erased else _reason(stated or recorded), False)

    def profiled(self, stored: Stored) -> UserState | None:
        """The user's state if the user is being profiled (timers act only then)."""
        if isinstance(stored, UserState) and self.admits(stored.consent):
            return stored
        return None


def _reason(statement: str | None) -> str:
    """DENIED when the user denied consent (now or before), NOT_GRANTED when only the default did."""
    return DENIED if statement == DENIED else NOT_GRANTED


class ErasureRequest(NamedTuple):
    """A right-to-be-forgotten request, as read from the erasure topic."""

    user_id: str
    request_id: str
    requested_at: int

    def as_record(self) -> dict[str, Any]:
        return self._asdict()


ERASE, RESET, OPT_OUT, OPT_IN = "erase", "reset", "opt_out", "opt_in"
CONTROL_ACTIONS = (RESET, OPT_OUT, OPT_IN)


class ControlRequest(NamedTuple):
    """A user's control over their personalization, as read from the erasure topic (``action``
    besides ``erase``): ``reset`` clears the profile (counters, interests, segments, predictions)
    and keeps consent; ``opt_out`` resets and records consent denied; ``opt_in`` records it granted."""

    user_id: str
    request_id: str
    requested_at: int
    action: str

    def as_record(self) -> dict[str, Any]:
        return self._asdict()


class InvalidErasureRequest(ValueError):
    """The text is not an erasure or control request; the message says what is wrong."""


def parse_erasure(text: bytes | str, pseudonym: Callable[[str], str] | None = None) -> ErasureRequest | ControlRequest:
    """``{"user_id": str, "request_id": str, "requested_at": epoch ms[, "action": str]}`` in UTF-8
    (bytes as read from the topic) or text; raises InvalidErasureRequest. ``action``: ``erase`` (the default), ``reset``, ``opt_out`` or ``opt_in``.

    ``pseudonym``: applied to the user id, as to the events' (``privacy.pseudonymize``), so the
    request is keyed like the user's events."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise InvalidErasureRequest(f"not JSON: {err}") from None
    if not isinstance(payload, dict):
        raise InvalidErasureRequest("expected a JSON object")
    unknown = sorted(set(payload) - set(ControlRequest._fields))
    if unknown:
        raise InvalidErasureRequest(f"unknown fields {unknown}")
    for name in ("user_id", "request_id"):
        value = payload.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
            raise InvalidErasureRequest(f"{name} must be a string of 1 to {MAX_ID_CHARS} characters")
    at = payload.get("requested_at")
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise InvalidErasureRequest("requested_at must be a non-negative integer (epoch ms)")
    action = payload.get("action", ERASE)
    if action not in (ERASE, *CONTROL_ACTIONS):
        raise InvalidErasureRequest(f"action must be one of {[ERASE, *CONTROL_ACTIONS]}")
    user = payload["user_id"]
    user = user if pseudonym is None else pseudonym(user)
    if action == ERASE:
        return ErasureRequest(user, payload["request_id"], at)
    return ControlRequest(user, payload["request_id"], at, action)


def audit_record(request: ErasureRequest, erased_at: int, state_cleared: bool,
                 redis_keys_deleted: int) -> dict[str, Any]:
    """The confirmation written to the audit topic once the user's state and Redis keys are gone."""
    return {"request_id": request.request_id, "user_id": request.user_id, "requested_at": request.requested_at,
            "erased_at": erased_at, "state_cleared": state_cleared, "redis_keys_deleted": redis_keys_deleted}


def control_audit_record(request: ControlRequest, done_at: int, state_cleared: bool) -> dict[str, Any]:
    """The confirmation written to the audit topic once a control request is carried out."""
    return {"request_id": request.request_id, "user_id": request.user_id, "requested_at": request.requested_at,
            "action": request.action, "done_at": done_at, "state_cleared": state_cleared}
