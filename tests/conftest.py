"""Shared fixtures: the real local stack (Kafka + Redis) is started once per test run."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from personalization.config.settings import REPO_ROOT, Settings, load_settings
from personalization.replay.datasets import locate_datasets


@pytest.fixture(scope="session")
def stack() -> None:
    """Start (or reuse) the local Kafka broker and Redis server; idempotent."""
    subprocess.run(["bash", str(REPO_ROOT / "stack" / "stack.sh"), "up"], check=True)


@pytest.fixture(scope="session")
def datasets():
    """The real datasets: a missing folder fails under CI=true and skips, loudly, elsewhere."""
    location = locate_datasets(None)
    if location.missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real datasets are required in CI: {location.report()}")
        pytest.skip(f"real datasets not available: {location.report()}")
    return location


def isolated_settings(tmp_path: Path, **sections) -> Settings:
    """Settings with topics, consumer group and Redis prefix of their own, bounded mode."""
    run = uuid.uuid4().hex[:10]
    names = {"events": "events", "dlq": "dlq", "late": "late", "sessions": "sessions",
             "segment_changes": "segment-changes"}
    base = load_settings().with_overrides(
        kafka={"topics": {k: f"t-{run}-{v}" for k, v in names.items()}, "group_id": f"g-{run}",
               "bounded": True},
        redis={"key_prefix": f"pzt:{run}"},
        flink={"checkpoint_dir": (tmp_path / "checkpoints").as_uri()},
    )
    return base.with_overrides(**sections) if sections else base
