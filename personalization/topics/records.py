"""Read and write single records of the job's topics from outside the job: control records
(rules, erasures) published with the broker's acknowledgement, and committed records read back."""

from __future__ import annotations

import time

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from personalization.config.kafka import kafka_client
from personalization.config.settings import Settings


def publish_record(settings: Settings, topic: str, value: bytes, partition: int | None = None) -> None:
    """Send one record and wait for the broker's acknowledgement (control records: rules, erasures)."""
    producer = kafka_client(KafkaProducer, settings)
    try:
        producer.send(topic, value, partition=partition).get(timeout=30)
    finally:
        producer.close()


def read_topic(settings: Settings, topic: str, idle_timeout_ms: int = 2000) -> list[dict]:
    """Every JSON record of a topic, committed transactions only (exactly-once outputs)."""
    consumer = kafka_client(KafkaConsumer, settings, topic, auto_offset_reset="earliest", enable_auto_commit=False,
                            consumer_timeout_ms=idle_timeout_ms, isolation_level="read_committed")
    try:
        return [orjson.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def last_record(settings: Settings, topic: str, partition: int = 0, timeout_s: float = 30.0) -> bytes | None:
    """The value of a partition's newest record (None if the partition is empty or the topic missing)."""
    consumer = kafka_client(KafkaConsumer, settings, enable_auto_commit=False, isolation_level="read_committed")
    try:
        if partition not in (consumer.partitions_for_topic(topic) or ()):
            return None
        tp = TopicPartition(topic, partition)
        end, start = consumer.end_offsets([tp])[tp], consumer.beginning_offsets([tp])[tp]
        if end <= start:
            return None
        consumer.assign([tp])
        consumer.seek(tp, end - 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in consumer.poll(timeout_ms=500).get(tp, []):
                return message.value
        raise TimeoutError(f"no record of {topic!r} partition {partition} at offset {end - 1} within {timeout_s:.0f} s")
    finally:
        consumer.close()


def topic_size(settings: Settings, topic: str) -> int:
    """Records in a topic (end minus beginning offsets over all partitions)."""
    consumer = kafka_client(KafkaConsumer, settings)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        return sum(ends[p] - starts[p] for p in partitions)
    finally:
        consumer.close()
