"""Create, delete and check the job's Kafka topics: one place for their names, partitions and
configs, so the job's start-up check, ``pz topics``, the demo, the bench and the tests agree."""

from __future__ import annotations

import time
from contextlib import suppress

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from personalization.config.kafka import kafka_client
from personalization.config.settings import Settings
from personalization.core.dead_letter import dlq_max_message_bytes


def topic_names(settings: Settings) -> list[str]:
    """Every topic the config names (``kafka.topics``), in its declared order."""
    topics = settings.kafka.topics
    return [getattr(topics, name) for name in topics.keys()]


def partitions_of(settings: Settings, name: str) -> int:
    """The rules topic has one partition: rule updates must be applied in the order published."""
    return 1 if name == settings.kafka.topics.rules else settings.kafka.topics.partitions


def ensure_topics(settings: Settings, recreate: bool = False, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics (returns their names); with ``recreate`` delete them first so a run starts empty."""
    admin = kafka_client(KafkaAdminClient, settings)
    try:
        names = topic_names(settings)
        if recreate:
            delete_topics(settings, timeout_s)
        missing = [name for name in names if name not in set(admin.list_topics())]
        for name in missing:
            topic = NewTopic(name, partitions_of(settings, name), settings.kafka.replication_factor,
                             topic_configs=topic_configs(settings, name))
            # Deletion is asynchronous on the broker: creating too early is refused; retry.
            _wait(lambda topic=topic: _create(admin, topic), timeout_s, f"creation of topic {name}")
        return missing
    finally:
        admin.close()


def delete_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Delete the job's topics that exist (bench and test clean-up); returns the names deleted."""
    admin = kafka_client(KafkaAdminClient, settings)
    try:
        existing = [name for name in topic_names(settings) if name in set(admin.list_topics())]
        if existing:
            with suppress(UnknownTopicOrPartitionError):
                admin.delete_topics(existing)
            _wait(lambda: not set(existing) & set(admin.list_topics()), timeout_s, f"deletion of topics {existing}")
        return existing
    finally:
        admin.close()


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Every topic refuses acks=all writes with fewer in-sync replicas than kafka.min_insync_replicas
    (set on the topic, not left to the brokers' default); the DLQ takes records up to the headers'
    headroom larger than the events topic does."""
    configs = {"min.insync.replicas": str(settings.kafka.min_insync_replicas)}
    if name == settings.kafka.topics.dlq:
        configs["max.message.bytes"] = str(dlq_max_message_bytes(settings.kafka.max_message_bytes))
    return configs


def dlq_size_problem(settings: Settings) -> str | None:
    """Why the DLQ topic could refuse the dead letter of a record the events topic accepts (the
    sink would fail on it at every restart), or None. Topics that do not exist yet are not checked."""
    topics = settings.kafka.topics
    admin = kafka_client(KafkaAdminClient, settings)
    try:
        existing = set(admin.list_topics())
        names = [name for name in (topics.events, topics.dlq) if name in existing]
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, ["max.message.bytes"])
                                            for name in names], config_filter="all") if names else {}
    finally:
        admin.close()
    limits = {name: int(configs["max.message.bytes"]["value"]) for name, configs in described.get("topic", {}).items()}
    if limits.get(topics.events, 0) > settings.kafka.max_message_bytes:
        return (f"topic {topics.events!r} accepts records of up to {limits[topics.events]} bytes, more than "
                f"kafka.max_message_bytes ({settings.kafka.max_message_bytes}): set it to the topic's limit")
    needed = dlq_max_message_bytes(settings.kafka.max_message_bytes)
    if topics.dlq in limits and limits[topics.dlq] < needed:
        return (f"topic {topics.dlq!r} accepts records of up to {limits[topics.dlq]} bytes; a dead letter needs "
                f"up to {needed} (kafka.max_message_bytes + the headers): kafka-configs.sh --bootstrap-server "
                f"<broker> --alter --entity-type topics --entity-name {topics.dlq} "
                f"--add-config max.message.bytes={needed}")
    return None


def _create(admin: KafkaAdminClient, topic: NewTopic) -> bool:
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return topic.name in set(admin.list_topics())
    return True


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)
