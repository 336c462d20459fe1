"""Polling with a deadline, shared by the benchmark runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pyflink.common import JobStatus

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 1.0, client=None) -> T:
    """``condition()``'s first truthy value. With a JobClient, fail at once if the job ended
    (its MiniCluster, and REST, go with it) rather than poll until the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if client is not None and (status := client.get_job_status().result()) != JobStatus.RUNNING:
            raise RuntimeError(f"{what}: the job is {status.name} (see the Flink log)")
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
