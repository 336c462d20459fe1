"""The consumer loop: segment changes in, deliveries out, failures to the webhook DLQ.

Offsets are committed only once every delivery of every polled record has either succeeded or
been written (acknowledged) to the DLQ, so a crash re-delivers, never drops: at-least-once, with
the change id as the receivers' idempotency key.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError

from personalization.activation.delivery import Change, Endpoint, Outcome
from personalization.activation.signing import load_secret
from personalization.config.settings import Settings, WebhookEndpoint
from personalization.config.kafka import kafka_client

log = logging.getLogger("personalization.activation")
MAX_RAW_BYTES = 64 * 1024  # of an unparseable record kept in its DLQ entry (its offset points at all of it)


@dataclass
class Stats:
    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    invalid: int = 0


class Activation:
    """Endpoints, a DLQ producer and the delivery bookkeeping; ``run`` and ``replay`` use it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        cfg = settings.activation
        self.endpoints = {e.name: Endpoint(e, load_secret(e.secret_env)) for e in cfg.endpoints}
        self.stats = Stats()
        self._producer = kafka_client(KafkaProducer, settings)

    def consumer(self, group_id: str, topic: str | None, max_records: int) -> KafkaConsumer:
        # A batch may take its worst case (every delivery retried to the end) before its commit:
        # the poll interval allows it, so the group does not evict a slow but live service. A
        # crashed one is noticed by its missing heartbeats (session timeout) instead.
        worst_s = max((_worst_batch_s(e, max_records) for e in self.settings.activation.endpoints), default=0)
        return kafka_client(
            KafkaConsumer, self.settings, *([topic] if topic else []), group_id=group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
            max_poll_records=max_records, max_poll_interval_ms=max(300_000, int(worst_s * 1000) + 60_000),
            session_timeout_ms=10_000, heartbeat_interval_ms=3_000)

    def process(self, records: Iterable[ConsumerRecord]) -> None:
        """Deliver every record to every endpoint that wants it; return once each delivery
        succeeded or is acknowledged by the DLQ."""
        routed: list[tuple[ConsumerRecord, Change, str]] = []
        for record in records:
            self.stats.records += 1
            try:
                change = Change.parse(record.value)
            except ValueError as err:
                self.stats.invalid += 1
                self._dead_letter(record, None, None, Outcome(False, 0, f"invalid segment change: {err}"))
                continue
            routed += [(record, change, name) for name, endpoint in self.endpoints.items()
                       if endpoint.config.wants(change.segment, change.action)]
        self.deliver(routed)

    def deliver(self, routed: list[tuple[ConsumerRecord, Change, str]]) -> None:
        """Each (source record, change, endpoint name), concurrently within each endpoint's limits."""
        pending = [(record, change, name, self.endpoints[name].submit(change)) for record, change, name in routed]
        for record, change, name, future in pending:
            outcome = future.result()
            if outcome.delivered:
                self.stats.delivered += 1
            else:
                self._dead_letter(record, change, name, outcome)
        self._producer.flush()

    def _dead_letter(self, record: ConsumerRecord, change: Change | None, endpoint: str | None,
                     outcome: Outcome) -> None:
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s for endpoint %s after %d attempts: %s",
                    change.id if change else f"{record.topic}/{record.partition}@{record.offset}",
                    endpoint, outcome.attempts, outcome.reason)
        entry = {
            "id": change.id if change else None,
            "endpoint": endpoint,
            "url": self.endpoints[endpoint].config.url if endpoint else None,
            "reason": outcome.reason,
            "attempts": outcome.attempts,
            "failed_at": int(time.time() * 1000),
            "change": change.record if change else None,
            "source": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        }
        if change is None:
            entry["raw_base64"] = base64.b64encode(record.value[:MAX_RAW_BYTES]).decode()
            entry["raw_bytes"] = len(record.value)
        key = change.user_id.encode() if change else record.key
        # .get(): an unacknowledged dead letter must stop the commit (the error propagates).
        self._producer.send(self.settings.kafka.topics.webhooks_dlq, orjson.dumps(entry), key=key).get(timeout=60)

    def close(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.close()
        self._producer.close()


def _worst_batch_s(endpoint: WebhookEndpoint, records: int) -> float:
    """Seconds ``records`` deliveries to ``endpoint`` can take if every attempt fails slowly."""
    attempts = endpoint.retries + 1
    slow = -(-records // endpoint.concurrency) * attempts * (endpoint.timeout + endpoint.backoff_max) / 1000
    return slow + (records * attempts / endpoint.rate_limit if endpoint.rate_limit else 0)


def group_id(settings: Settings) -> str:
    """The service's consumer group (its replays use ``<group>-replay-<endpoint>``)."""
    return settings.activation.group_id or f"{settings.kafka.group_id}-activation"


def run(settings: Settings, stop: Callable[[], bool] = lambda: False) -> Stats:
    """Consume ``segment-changes`` until ``stop()``; commit after each fully handled batch."""
    activation = Activation(settings)
    consumer = activation.consumer(group_id(settings), settings.kafka.topics.segment_changes,
                                   settings.activation.batch_size)
    log.info("activation: %d endpoint(s) on %s, group %s", len(activation.endpoints),
             settings.kafka.topics.segment_changes, group_id(settings))
    try:
        while not stop():
            batches = consumer.poll(timeout_ms=500)
            if not batches:
                continue
            activation.process(record for batch in batches.values() for record in batch)
            try:
                consumer.commit()
            except CommitFailedError as err:  # a rebalance took the partitions: they are re-delivered
                log.warning("offset commit failed, the batch will be delivered again: %s", err)
    finally:
        consumer.close(autocommit=False)
        activation.close()
    return activation.stats


def replay(settings: Settings, endpoint: str) -> Stats:
    """Re-deliver the DLQ's entries for ``endpoint`` (with its current URL and limits), from where
    the last replay for it stopped to the DLQ's end now; failures are dead-lettered again, after it.
    Entries of other endpoints, and of records that were not segment changes, are left alone."""
    if endpoint not in {e.name for e in settings.activation.endpoints}:
        raise KeyError(f"no endpoint named {endpoint!r} in activation.endpoints")
    activation = Activation(settings)
    topic = settings.kafka.topics.webhooks_dlq
    consumer = activation.consumer(f"{group_id(settings)}-replay-{endpoint}", None,
                                   settings.activation.batch_size)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(_partitions(consumer, topic))]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            batches = consumer.poll(timeout_ms=500)
            entries = [r for tp, batch in batches.items() for r in batch if r.offset < ends[tp]]
            activation.deliver(list(_failed_deliveries(entries, endpoint)))
            for tp in batches:  # stop at the end seen at the start: what this replay dead-letters waits
                if consumer.position(tp) > ends[tp]:
                    consumer.seek(tp, ends[tp])
            consumer.commit()
    finally:
        consumer.close(autocommit=False)
        activation.close()
    return activation.stats


def _partitions(consumer: KafkaConsumer, topic: str, timeout_s: float = 30.0) -> set[int]:
    """A topic's partitions; a new client's first metadata can briefly report none."""
    deadline = time.monotonic() + timeout_s
    while not (partitions := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise KeyError(f"topic {topic!r} not found (or without partitions) after {timeout_s:.0f} s")
        time.sleep(0.2)
    return partitions


def _failed_deliveries(entries: Iterable[ConsumerRecord], endpoint: str) -> Iterable[tuple[ConsumerRecord, Change, str]]:
    """The DLQ entries of ``endpoint``, as (original record, change, endpoint) to deliver again."""
    for entry in entries:
        try:
            value = orjson.loads(entry.value)
            if value.get("endpoint") != endpoint or value.get("change") is None:
                continue
            change = Change.parse(orjson.dumps(value["change"]))
            source = value["source"]
            original = entry._replace(topic=source["topic"], partition=source["partition"], offset=source["offset"],
                                      key=change.user_id.encode(), value=orjson.dumps(value["change"]))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("DLQ entry %s/%d@%d skipped, not a webhook dead letter: %s",
                        entry.topic, entry.partition, entry.offset, err)
            continue
        yield original, change, endpoint
