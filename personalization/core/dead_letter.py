"""The dead-letter format, in one place: the rejected record's bytes unchanged as the DLQ record's
value, and why and where from in Kafka record headers (Kafka Connect's dead-letter convention).

Why headers and not a JSON envelope around the payload: escaping grows the payload (a control
byte becomes six bytes, ``\\u0001``), so a record the broker accepted on ``events`` could be too
large for the DLQ, and the sink's ``RecordTooLargeException`` restarted the job on the same
record forever. Here a DLQ record is its original plus headers bounded by ``HEADROOM_BYTES``
(every header value is cut to ``MAX_HEADER_BYTES``), so a DLQ topic that accepts that much more
than the events topic takes every record the events topic took.

Headers, each UTF-8 text (numbers in decimal), absent when unknown:

======================  ===================================================================
``dlq.reason``          why (``too_large``, ``not_json``, ``invalid_rules``, ...)
``dlq.detail``          what exactly, for a human
``dlq.path``            the JSON path of the offending field
``dlq.topic``           the source topic
``dlq.partition``       source partition (events only: control topics are read as text)
``dlq.offset``          source offset (events only)
``dlq.timestamp``       the source record's Kafka timestamp, ms (events only)
``dlq.rejected_at``     wall-clock time of the rejection, ms
``dlq.<name>``          what a reason adds, e.g. ``dlq.running_rules_version``
======================  ===================================================================
"""

from __future__ import annotations

from typing import Any

import base64
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

HEADER_PREFIX = "dlq."
REASON, DETAIL, PATH = "dlq.reason", "dlq.detail", "dlq.path"
TOPIC, PARTITION, OFFSET, TIMESTAMP = "dlq.topic", "dlq.partition", "dlq.offset", "dlq.timestamp"
REJECTED_AT = "dlq.rejected_at"
_TEXT = (REASON, DETAIL, PATH, TOPIC)
_NUMBERS = (PARTITION, OFFSET, TIMESTAMP, REJECTED_AT)
MAX_HEADER_BYTES = 1024       # a detail naming a megabyte of properties is cut here
MAX_EXTRA_HEADERS = 4         # what a reason adds (dlq.<name>): a few fixed names from the code
HEADROOM_BYTES = 16 * 1024    # the most the headers (names, values, record overhead) add to a record
_CUT = "…".encode()


class DeadLetterError(ValueError):
    """A Kafka record that is not a dead letter of this format (no ``dlq.reason`` header, ...)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record: its original bytes and what went wrong with it, from where."""

    value: bytes
    reason: str
    detail: str
    topic: str
    rejected_at: int
    path: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None
    extra: tuple[tuple[str, str], ...] = ()  # (name without the prefix, text)

    def __post_init__(self) -> None:
        if len(self.extra) > MAX_EXTRA_HEADERS:
            raise ValueError(f"at most {MAX_EXTRA_HEADERS} extra headers, got {len(self.extra)}")

    def headers(self) -> dict[str, bytes]:
        """The Kafka headers; text cut to ``MAX_HEADER_BYTES`` so the total stays in ``HEADROOM_BYTES``."""
        fields = {REASON: self.reason, DETAIL: self.detail, PATH: self.path, TOPIC: self.topic,
                  PARTITION: self.partition, OFFSET: self.offset, TIMESTAMP: self.timestamp,
                  REJECTED_AT: self.rejected_at,
                  **{HEADER_PREFIX + name[:64]: text for name, text in self.extra}}
        return {name: _header_bytes(value) for name, value in fields.items() if value is not None}

    @classmethod
    def from_headers(cls, value: bytes | None, headers: Iterable[tuple[str, bytes | None]]) -> DeadLetter:
        """Read a DLQ record back; raises :class:`DeadLetterError` naming what is missing or wrong."""
        found = {name: raw for name, raw in headers if name.startswith(HEADER_PREFIX) and raw is not None}
        missing = [name for name in (REASON, TOPIC, REJECTED_AT) if name not in found]
        if missing:
            raise DeadLetterError(f"missing header(s) {', '.join(missing)}")
        try:
            text = {name: found[name].decode("utf-8") for name in _TEXT if name in found}
            numbers = {name: int(found[name]) for name in _NUMBERS if name in found}
            extra = tuple((name.removeprefix(HEADER_PREFIX), raw.decode("utf-8")) for name, raw in found.items()
                          if name not in _TEXT and name not in _NUMBERS)
        except (UnicodeDecodeError, ValueError) as err:
            raise DeadLetterError(f"unreadable dlq.* header: {err}") from None
        return cls(value=value or b"", reason=text[REASON], detail=text.get(DETAIL, ""), topic=text[TOPIC],
                   rejected_at=numbers[REJECTED_AT], path=text.get(PATH), partition=numbers.get(PARTITION),
                   offset=numbers.get(OFFSET), timestamp=numbers.get(TIMESTAMP), extra=extra[:MAX_EXTRA_HEADERS])

    def to_wire(self) -> str:
        """Text for the job's side outputs (typed as strings) on the way to the DLQ sink."""
        return orjson.dumps({"value": base64.b64encode(self.value).decode("ascii"),
                             "headers": {name: raw.decode("utf-8") for name, raw in self.headers().items()}}
                            ).decode()

    @classmethod
    def from_wire(cls, text: str) -> DeadLetter:
        wire = orjson.loads(text)
        return cls.from_headers(base64.b64decode(wire["value"]),
                                ((name, value.encode("utf-8")) for name, value in wire["headers"].items()))

    def as_json(self) -> dict[str, Any]:
        """A JSON view for people and ``jq``: the value as text when it is UTF-8, else base64."""
        try:
            payload, encoding = self.value.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(self.value).decode("ascii"), "base64"
        return {"reason": self.reason, "detail": self.detail, "path": self.path,
                "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                           "timestamp": self.timestamp},
                "rejected_at": self.rejected_at, **dict(self.extra),
                "payload_encoding": encoding, "payload": payload}


def _header_bytes(value: str | int) -> bytes:
    """UTF-8 (lone surrogates escaped, never an error), at most ``MAX_HEADER_BYTES``, cut between characters."""
    raw = str(value).encode("utf-8", "backslashreplace")
    if len(raw) <= MAX_HEADER_BYTES:
        return raw
    return raw[:MAX_HEADER_BYTES - len(_CUT)].decode("utf-8", "ignore").encode() + _CUT


def dlq_max_message_bytes(events_max_message_bytes: int) -> int:
    """The record size the DLQ topic (``max.message.bytes``) and its producer (``max.request.size``)
    must accept, so that a dead letter of any record the events topic accepted can be written."""
    return events_max_message_bytes + HEADROOM_BYTES


OUTPUT_TOO_LARGE = "output_too_large"  # DLQ reason: an output the job cannot write (too large for Kafka or Redis)
OUTPUT_OVERHEAD_BYTES = 1024  # what a Kafka record and its batch add to the value, with a margin
OUTPUT_HEAD_CHARS = 1024      # how much of an oversized output its dead letter keeps


def output_limit(max_message_bytes: int) -> int:
    """The largest value the job writes to a Kafka output topic (whose records the broker takes up to
    ``kafka.max_message_bytes``)."""
    return max_message_bytes - OUTPUT_OVERHEAD_BYTES


def oversized_output(record: str, topic: str, limit: int, now_ms: int) -> DeadLetter | None:
    """The dead letter of an output record above ``limit`` bytes, or None when it fits: written, it
    would fail the sink (RecordTooLargeException) and the job at every restart. The dead letter
    keeps the size and the record's head (its ids), not the record (it would not fit either)."""
    if len(record) * 4 <= limit:  # UTF-8 takes at most 4 bytes a character: no need to encode
        return None
    size = len(record.encode())
    if size <= limit:
        return None
    return DeadLetter(orjson.dumps({"bytes": size, "head": record[:OUTPUT_HEAD_CHARS]}), OUTPUT_TOO_LARGE,
                      f"a record of {size} bytes for {topic!r}, above the {limit} a Kafka output takes "
                      f"(kafka.max_message_bytes less {OUTPUT_OVERHEAD_BYTES}); not written", topic, now_ms)
