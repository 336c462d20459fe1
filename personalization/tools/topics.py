"""``pz topics``: list the job's Kafka topics (``kafka.topics``) and create the missing ones."""

from __future__ import annotations

import click
from kafka import KafkaConsumer

from personalization.config.cli import with_settings
from personalization.config.kafka import kafka_client
from personalization.config.settings import Settings
from personalization.topics.admin import ensure_topics
from personalization.topics.records import topic_size


@click.group()
def cli() -> None:
    """The job's Kafka topics (kafka.topics): list them, create the missing ones."""


@cli.command("list")
@with_settings
def list_command(settings: Settings) -> None:
    """Every topic of the config: key, name, partitions and records (or "missing")."""
    consumer = kafka_client(KafkaConsumer, settings)
    try:
        for key in settings.kafka.topics.keys():
            name = getattr(settings.kafka.topics, key)
            partitions = consumer.partitions_for_topic(name)
            shown = f"{len(partitions)}\t{topic_size(settings, name)}" if partitions else "missing"
            click.echo(f"{key}\t{name}\t{shown}")
    finally:
        consumer.close()


@cli.command("create")
@with_settings
def create_command(settings: Settings) -> None:
    """Create the missing topics (partitions: kafka.topics.partitions, the rules topic has one;
    kafka.replication_factor replicas; min.insync.replicas: kafka.min_insync_replicas)."""
    created = ensure_topics(settings)
    click.echo(f"created {len(created)} topic(s){': ' + ', '.join(created) if created else ''}")
