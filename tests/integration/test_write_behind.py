"""Batched Redis writes across a checkpoint: a write held back when a checkpoint completes is
re-done after a restore from that checkpoint (``operators.user_profile._flush_within_delay``; the
users' recommendations, on here, by ``operators.recommend.RecoItems``: ``ItemRow.unwritten``).

The watermark is kept far behind the data (out-of-orderness of 30 days), so no session closes
and no segment changes: every profile write is one applied event, the end state does not depend
on when watermarks happened to move, and every write is held back in the batch.
"""

from __future__ import annotations

import os
import signal
import subprocess

from personalization.config.settings import REPO_ROOT
from personalization.pipelines.control import stop_with_savepoint
from personalization.tools.monitor import FlinkRest
from personalization.replay.producer import produce, replay_events
from personalization.serving.reader import ProfileReader
from tests.support import (PZ, free_port, isolated_settings, latest_checkpoint, redis_state, start_job, wait_until,
                           write_config)

EVENTS = 600
HELD_BACK = 30_000  # ms: long enough to kill the job while the writes are still held back
STILL_TIME = {"out_of_orderness": "30d", "idle_timeout": "1h"}
# The item side's held answers; no trending fills (they wait for a watermark that stands still here:
# test_reco_job restores those).
RECO = {"enabled": True, "blend_weights": {"knn": 1.0, "recent": 0.5, "trending": 0.0}}


def test_writes_held_back_at_a_completed_checkpoint_are_redone_after_restore(stack, datasets, tmp_path):
    events = list(replay_events("taobao", augmented=True, seed=11, limit=EVENTS))
    reference = isolated_settings(tmp_path / "reference", kafka={"bounded": False}, time=STILL_TIME,
                                  recommendations=RECO, redis={"batch_delay": 0})  # every write at once
    produce(events, reference.kafka.bootstrap_servers, reference.kafka.topics.events, progress=False)
    client = start_job(reference)
    wait_until(lambda: _processed(reference) == EVENTS, 180, "the reference run to write every event")
    stop_with_savepoint(client, (tmp_path / "reference-stop").as_uri())
    expected = redis_state(reference)
    assert _recommended(expected) > 0

    settings = isolated_settings(
        tmp_path / "held", events_topic=reference.kafka.topics.events, kafka={"bounded": False},
        time=STILL_TIME, flink={"checkpoint_interval": 500}, recommendations=RECO,
        redis={"batch_delay": HELD_BACK, "batch_size": 1_000_000})
    rest_port = free_port()
    config = write_config(settings.with_overrides(flink={"rest_port": rest_port}), tmp_path / "job.yaml")
    job = subprocess.Popen([*PZ, "run", "--config", str(config)],
                           cwd=REPO_ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rest = FlinkRest(f"http://127.0.0.1:{rest_port}")
        job_id = wait_until(lambda: _running(rest), 180, "the job to run")[0]
        wait_until(lambda: _counter(rest, job_id, "events_processed") == EVENTS, 180, "every event processed")
        before = _checkpoint_number(settings)
        wait_until(lambda: _checkpoint_number(settings) > before, 60, "a checkpoint after the last event")
        held = redis_state(settings)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    assert _processed_in(held) < EVENTS, "nothing was held back: the test proves nothing"
    assert _recommended(held) < _recommended(expected), "no recommendations held back: the test proves nothing"

    # The restored job reads no event (the checkpoint holds the end offsets): whatever it writes
    # comes from the restored flush timers, which re-derive the profiles from the restored state.
    restored = settings.with_overrides(flink={"savepoint_path": latest_checkpoint(settings.flink.checkpoint_dir)})
    client = start_job(restored)
    try:
        wait_until(lambda: redis_state(settings) == expected, HELD_BACK / 1000 + 120,
                   "the held-back writes to be re-done after the restore")
    finally:
        stop_with_savepoint(client, (tmp_path / "restored-stop").as_uri())


def _processed(settings) -> int:
    return sum(p["events_total"] for p in ProfileReader.from_settings(settings).all_profiles())


def _processed_in(state: dict) -> int:
    """Events counted by the profiles in a ``redis_state`` snapshot."""
    return sum(int(value[b"events_total"]) for key, value in state.items() if key.endswith(":profile"))


def _recommended(state: dict) -> int:
    """The sum of the versions (request numbers) of the recommendations in a ``redis_state`` snapshot."""
    return sum(int(value[b"version"]) for key, value in state.items() if key.endswith(":recommendations"))


def _running(rest: FlinkRest) -> list[str] | None:
    try:
        return rest.running_jobs() or None
    except OSError:
        return None


def _counter(rest: FlinkRest, job_id: str, name: str) -> int | None:
    status = rest.try_status(job_id)
    return None if status is None else status.counters.get(name)


def _checkpoint_number(settings) -> int:
    latest = latest_checkpoint(settings.flink.checkpoint_dir)
    return int(latest.rsplit("chk-", 1)[1]) if latest else 0
