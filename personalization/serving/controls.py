"""Publishing a user's privacy request (erasure, reset, opt-out, opt-in) to the job's erasure
topic: one place for the CLI and the HTTP API. The job carries it out and confirms on the audit
topic (docs/privacy.md)."""

from __future__ import annotations

import time
import uuid

import orjson
from kafka import KafkaProducer

from personalization.config.settings import Settings
from personalization.core.privacy import ERASE, ControlRequest, ErasureRequest, parse_erasure
from personalization.config.kafka import kafka_client

Request = ErasureRequest | ControlRequest


def new_request(user_id: str, action: str, request_id: str | None = None) -> Request:
    """A request made now (``request_id``: a new UUID unless given). ``action``: ``erase``,
    ``reset``, ``opt_out`` or ``opt_in``."""
    request_id, now = request_id or str(uuid.uuid4()), int(time.time() * 1000)
    if action == ERASE:
        return ErasureRequest(user_id, request_id, now)
    return ControlRequest(user_id, request_id, now, action)


def request_record(request: Request) -> bytes:
    """The record as the job reads it; raises ``InvalidErasureRequest`` for what the job would
    send to the DLQ (refused here rather than published)."""
    record = orjson.dumps(request.as_record())
    parse_erasure(record)
    return record


class RequestPublisher:
    """A producer kept open between requests (the HTTP API publishes many), made at the first
    request (an API that only reads needs no Kafka); each send waits for the broker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: KafkaProducer | None = None

    def publish(self, request: Request, timeout_s: float = 30) -> bytes:
        record = request_record(request)
        if self._producer is None:
            self._producer = kafka_client(KafkaProducer, self._settings)
        self._producer.send(self._settings.kafka.topics.erasure, record).get(timeout=timeout_s)
        return record

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
