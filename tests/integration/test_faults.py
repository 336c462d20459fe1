"""Crash safety on the real stack: the Redis end state after a fault equals an uninterrupted run.

All runs read the same real input topic, in exactly-once mode for the Kafka outputs; each has
its own Redis prefix (or server) and output topics. Compared: every Redis key and field except
the documented wall-clock ``updated_at``, and the ``sessions`` topic read with read_committed.
Fault runs are unbounded and drained once every event is processed (tests.support.fault_run_settings).
"""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest
import redis

from personalization.config.settings import REPO_ROOT
from tests.support import (
    EXACTLY_ONCE,
    RedisServer,
    committed_offsets,
    drain_when_done,
    fault_run_settings,
    free_port,
    kill_after_checkpoint,
    latest_checkpoint,
    processed_events,
    redis_state,
    replayed_run,
    sessions_of,
    start_job,
    wait_until,
)

SLICE = 5_000  # enough that each fault, struck after the first profiles, lands mid-stream


@pytest.fixture(scope="module")
def baseline(stack, datasets, tmp_path_factory):
    settings, events = replayed_run(tmp_path_factory.mktemp("baseline"), seed=5, limit=SLICE, kafka=EXACTLY_ONCE)
    return settings, len(events)


def _ends_within(client, seconds: float) -> bool:
    """Whether the job ends (finishes or fails) within ``seconds``: a thread waits on its result,
    so an end at any moment counts, not only at sampled instants."""
    ended = threading.Event()

    def wait() -> None:
        try:
            client.get_job_execution_result().result()
        except Exception:  # noqa: BLE001 - a failure is an end too; the caller asserts on it
            pass
        finally:
            ended.set()

    threading.Thread(target=wait, daemon=True).start()
    return ended.wait(seconds)


def _assert_same_end_state(settings, baseline_settings) -> None:
    assert redis_state(settings) == redis_state(baseline_settings)
    sessions = sessions_of(settings)
    assert sessions == sessions_of(baseline_settings)
    keys = [(s["session_id"], s["revision"], s["status"]) for s in sessions]
    assert len(keys) == len(set(keys))  # no duplicates behind read_committed


def test_sigkill_mid_stream_then_restore_from_the_last_checkpoint(baseline, tmp_path):
    baseline_settings, total = baseline
    settings = fault_run_settings(baseline_settings, tmp_path, flink={"checkpoint_interval": 1_000})
    assert kill_after_checkpoint(settings, tmp_path) == -signal.SIGKILL
    assert 0 < processed_events(settings) < total  # really killed mid-stream
    # What the group committed is covered by the latest checkpoint: the restore starts past those
    # records, and not past all of them.
    assert 0 < committed_offsets(settings) < total

    checkpoint = latest_checkpoint(settings.flink.checkpoint_dir)
    client = start_job(settings.with_overrides(flink={"savepoint_path": checkpoint}))
    drain_when_done(client, settings, total, tmp_path)
    _assert_same_end_state(settings, baseline_settings)


def test_redis_outage_mid_stream_back_pressures_and_loses_nothing(baseline, tmp_path):
    baseline_settings, total = baseline
    server = RedisServer(tmp_path / "redis").start()
    settings = fault_run_settings(baseline_settings, tmp_path, redis={"port": server.port, "retry_backoff_max": 1_000})
    client = start_job(settings)
    try:
        wait_until(lambda: processed_events(settings) > 0, 120, "the first profiles")
        # Killed, not shut down: no final AOF rewrite or flush. What it acknowledged is in the
        # AOF already (written before the reply), so the restart loses none of it.
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        # Redis stays down for 5 s; the job must neither fail nor finish meanwhile.
        assert not _ends_within(client, 5), "the job ended while Redis was down"
        server.start()  # same data folder: AOF persistence brings the written profiles back
        drain_when_done(client, settings, total, tmp_path)
        _assert_same_end_state(settings, baseline_settings)
    finally:
        server.stop()


def _refused(admin: redis.Redis, error: str) -> int:
    """How many commands the server refused with ``error`` (``INFO errorstats``)."""
    return admin.info("errorstats").get(f"errorstat_{error}", {}).get("count", 0)


def test_redis_read_only_then_out_of_memory_mid_stream_back_pressures_and_loses_nothing(baseline, tmp_path):
    """A failover's READONLY (the server made a replica of a master that does not answer) and OOM
    (``maxmemory`` under ``noeviction``) in turn, each until the job's writes were refused."""
    baseline_settings, total = baseline
    server = RedisServer(tmp_path / "redis").start()
    settings = fault_run_settings(baseline_settings, tmp_path, redis={"port": server.port, "retry_backoff_max": 1_000})
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    client = start_job(settings)
    try:
        wait_until(lambda: processed_events(settings) > 0, 120, "the first profiles")
        faults = ((("REPLICAOF", "127.0.0.1", str(free_port())), ("REPLICAOF", "NO", "ONE"), "READONLY"),
                  (("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0"), "OOM"))
        for fault, undo, error in faults:
            admin.execute_command(*fault)
            wait_until(lambda error=error: _refused(admin, error) > 0, 60, f"the job's writes refused with {error}")
            assert processed_events(settings) < total  # mid-stream
            assert not _ends_within(client, 3), f"the job ended while Redis answered {error}"
            admin.execute_command(*undo)
        drain_when_done(client, settings, total, tmp_path)
        _assert_same_end_state(settings, baseline_settings)
    finally:
        server.stop()


def test_kafka_broker_killed_mid_stream(baseline, tmp_path):
    baseline_settings, total = baseline
    settings = fault_run_settings(baseline_settings, tmp_path)
    client = start_job(settings)
    wait_until(lambda: processed_events(settings) > 0, 120, "the first profiles")
    stack = ["bash", str(REPO_ROOT / "stack" / "stack.sh")]
    killed = subprocess.run(stack + ["kill", "kafka"], check=True, capture_output=True, text=True)
    assert "kafka killed (SIGKILL" in killed.stdout + killed.stderr
    assert processed_events(settings) < total  # the broker went away mid-stream
    subprocess.run(stack + ["up"], check=True)
    drain_when_done(client, settings, total, tmp_path)
    _assert_same_end_state(settings, baseline_settings)
