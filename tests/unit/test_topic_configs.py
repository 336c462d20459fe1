"""The configs the tools create topics with (personalization.topics.admin.topic_configs)."""

from __future__ import annotations

from personalization.config.settings import load_settings
from personalization.core.dead_letter import HEADROOM_BYTES
from personalization.topics.admin import topic_configs, topic_names


def test_every_topic_gets_min_insync_replicas_and_the_dlq_its_headroom() -> None:
    settings = load_settings().with_overrides(kafka={"replication_factor": 3, "min_insync_replicas": 2,
                                                     "max_message_bytes": 2_000_000})
    dlq = settings.kafka.topics.dlq
    for name in topic_names(settings):
        expected = {"min.insync.replicas": "2"}
        if name == dlq:
            expected["max.message.bytes"] = str(2_000_000 + HEADROOM_BYTES)
        assert topic_configs(settings, name) == expected
