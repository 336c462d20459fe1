"""Shared fixtures: the real local stack (Kafka + Redis) is started once per test run."""

from __future__ import annotations

import os
import subprocess

import pytest

from kafka import KafkaAdminClient

from personalization.config.settings import REPO_ROOT, load_settings
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect
from tests.support import TEST_PREFIX, TEST_TOPIC_PREFIX
from personalization.replay.datasets import locate_datasets


@pytest.fixture(scope="session")
def stack():
    """Start (or reuse) the local Kafka broker and Redis server; afterwards remove what the tests
    created there (their ``t-*`` topics and ``pzt:*`` keys), so repeated runs do not pile up."""
    subprocess.run(["bash", str(REPO_ROOT / "stack" / "stack.sh"), "up"], check=True)
    yield
    settings = load_settings()
    ProfileReader(connect(settings.redis), TEST_PREFIX).delete_all()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        test_topics = [t for t in admin.list_topics() if t.startswith(TEST_TOPIC_PREFIX)]
        if test_topics:
            admin.delete_topics(test_topics)
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
