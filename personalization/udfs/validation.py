"""Turn raw Kafka record bytes into a contract-v1 Event, or a typed, machine-readable rejection.

The JSON Schema is compiled once (fastjsonschema generates Python code for it), so each
record costs one orjson parse and one call to the generated validator. Checks run from
cheapest to dearest, and the first failing one names the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import fastjsonschema
import orjson

from personalization.core.dead_letter import DeadLetter
from personalization.core.events import EVENT_TYPES, Event


class Reason(str, enum.Enum):
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    MISSING_IDENTITY = "missing_identity"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    SCHEMA_VIOLATION = "schema_violation"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    TIMESTAMP_MISMATCH = "timestamp_mismatch"
    UNKNOWN_EXPERIMENT = "unknown_experiment"  # an exposure to an experiment or variant not in the config


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    path: str | None = None


class EventValidator:
    """Holds the compiled contract; one instance per parallel parse task."""

    def __init__(self, schema_path: Path, max_event_bytes: int, max_future_skew_ms: int,
                 max_event_age_ms: int = 0, experiments: Mapping[str, tuple[str, ...]] | None = None) -> None:
        """``max_event_age_ms``: events older than this before the wall clock are rejected (0 = off).
        ``experiments``: name -> variants of the configured experiments (exposures are checked
        against them; None: not checked)."""
        schema = orjson.loads(Path(schema_path).read_bytes())
        self._validate = fastjsonschema.compile(schema)
        self._max_bytes = max_event_bytes
        self._max_skew = max_future_skew_ms
        self._max_age = max_event_age_ms
        self._experiments = experiments

    def validate(self, raw: bytes, record_ts: int, now_ms: int) -> Event | Rejection:
        """``record_ts`` is the Kafka record timestamp the watermarks were built from."""
        if len(raw) > self._max_bytes:
            return Rejection(Reason.TOO_LARGE, f"{len(raw)} bytes > limit {self._max_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return Rejection(Reason.NOT_UTF8, f"invalid UTF-8 at byte {err.start}")
        try:
            payload = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            return Rejection(Reason.NOT_JSON, str(err))
        if not isinstance(payload, dict):
            return Rejection(Reason.SCHEMA_VIOLATION, "event must be a JSON object", "$")
        if not (_present(payload.get("user_id")) or _present(payload.get("anonymous_id"))):
            return Rejection(Reason.MISSING_IDENTITY, "neither user_id nor anonymous_id is set")
        event_type = payload.get("event_type")
        if isinstance(event_type, str) and event_type not in EVENT_TYPES:
            return Rejection(Reason.UNKNOWN_EVENT_TYPE, f"unknown event_type {event_type!r}", "$.event_type")
        try:
            self._validate(payload)
        except fastjsonschema.JsonSchemaValueException as err:
            return Rejection(Reason.SCHEMA_VIOLATION, err.message, _json_path(err.path))
        ts = payload["ts"]
        if ts > now_ms + self._max_skew:
            return Rejection(Reason.TS_IN_FUTURE, f"ts {ts} is {ts - now_ms} ms ahead of now", "$.ts")
        if self._max_age and ts < now_ms - self._max_age:
            return Rejection(Reason.TS_TOO_OLD, f"ts {ts} is {now_ms - ts} ms before now "
                             f"(limit {self._max_age} ms)", "$.ts")
        if event_type == "exposure" and self._experiments is not None:
            rejection = self._check_exposure(payload["experiment"], payload["variant"])
            if rejection is not None:
                return rejection
        if ts != record_ts:
            return Rejection(
                Reason.TIMESTAMP_MISMATCH,
                f"ts {ts} differs from the Kafka record timestamp {record_ts}",
                "$.ts",
            )
        return Event.from_payload(payload)


    def _check_exposure(self, experiment: str, variant: str) -> Rejection | None:
        variants = self._experiments.get(experiment)
        if variants is None:
            known = ", ".join(sorted(self._experiments)) or "none"
            return Rejection(Reason.UNKNOWN_EXPERIMENT, f"experiment {experiment!r} is not configured "
                             f"(configured: {known})", "$.experiment")
        if variant not in variants:
            return Rejection(Reason.UNKNOWN_EXPERIMENT, f"variant {variant!r} is not a variant of experiment "
                             f"{experiment!r} ({', '.join(variants)})", "$.variant")
        return None


def dead_letter(raw: bytes, rejection: Rejection, topic: str, partition: int, offset: int,
                record_ts: int, rejected_at_ms: int) -> DeadLetter:
    """A rejected event for the DLQ: its bytes as read, and the rejection with the source position."""
    return DeadLetter(raw, rejection.reason.value, rejection.detail, topic, rejected_at_ms, rejection.path,
                      partition, offset, record_ts)


def control_dead_letter(reason: str, detail: str, topic: str, value: bytes, rejected_at_ms: int,
                        **extra: str) -> DeadLetter:
    """A rejected control record (a rules text, an erasure request), its bytes as read: a
    DataStream source gives no partition, offset or timestamp."""
    return DeadLetter(value, reason, detail, topic, rejected_at_ms, extra=tuple(extra.items()))


def _present(value: object) -> bool:
    return value is not None and value != ""


def _json_path(parts: list) -> str:
    path = "$"
    for part in parts[1:]:  # fastjsonschema names the root "data"
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
