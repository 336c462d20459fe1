"""Shared fixtures: the real local stack (Kafka + Redis) is started once per test run."""

from __future__ import annotations

import os
import subprocess

import pytest

from personalization.config.settings import REPO_ROOT
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
