"""Shared fixtures: the real local stack (Kafka + Redis) is started once per test run."""

from __future__ import annotations

import os
import subprocess

import pytest
from kafka import KafkaAdminClient

from personalization.config.settings import REPO_ROOT, load_settings
from personalization.topics.admin import topic_names
from personalization.replay.datasets import locate_datasets
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect
from tests.support import CREATED, TEST_TOPIC_PREFIX


@pytest.fixture(scope="session")
def stack():
    """Start (or reuse) the local Kafka broker and Redis server; afterwards remove the topics and
    keys this session's tests created, so repeated runs do not pile up."""
    subprocess.run(["bash", str(REPO_ROOT / "stack" / "stack.sh"), "up"], check=True)
    yield
    shared = load_settings()
    topics = set()
    for settings in CREATED:
        if not settings.redis.cluster_nodes and settings.redis.port == shared.redis.port:  # private servers are gone
            ProfileReader(connect(settings.redis), settings.redis.key_prefix).delete_all()
        topics |= {t for t in topic_names(settings) if t.startswith(TEST_TOPIC_PREFIX)}
    admin = KafkaAdminClient(bootstrap_servers=shared.kafka.bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        if topics & existing:
            admin.delete_topics(sorted(topics & existing))
    finally:
        admin.close()


@pytest.fixture(scope="session")
def datasets():
    """The real datasets: a missing folder fails under CI=true and skips, loudly, elsewhere."""
    location = locate_datasets(None)
    if location.missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real datasets are required in CI: {location.report()}")
        pytest.skip(f"real datasets not available: {location.report()}")
    return location
