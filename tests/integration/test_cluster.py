"""The job on a real standalone Flink cluster (1 JobManager + TaskManagers as separate processes).

Submitted with ``flink run`` as documented; unbounded, as in production. Each run is stopped
with ``--drain`` once every event is processed, and its Redis end state is compared with a
bounded MiniCluster run over the same input (every key and field but ``updated_at``).
"""

from __future__ import annotations

import pytest

from personalization.serving.reader import ProfileReader
from tests.flink_cluster import FlinkCluster
from tests.support import isolated_settings, latest_checkpoint, redis_state, replayed_run, wait_until

SLICE = 6_000  # enough that a kill or a savepoint after the first profiles lands mid-stream
CUSTOM_METRICS = ("personalization_events_processed", "personalization_profile_writes",
                  "personalization_events_valid")


@pytest.fixture(scope="module")
def baseline(stack, datasets, tmp_path_factory):
    settings, events = replayed_run(tmp_path_factory.mktemp("cluster-baseline"), seed=9, limit=SLICE)
    return settings, len(events)


@pytest.fixture
def cluster(tmp_path):
    cluster = FlinkCluster(tmp_path / "flink")
    cluster.start_jobmanager()
    yield cluster
    cluster.shutdown()


def _cluster_settings(baseline_settings, tmp_path):
    return isolated_settings(tmp_path, events_topic=baseline_settings.kafka.topics.events,
                             kafka={"bounded": False}, flink={"checkpoint_interval": 1_000},
                             time={"idle_timeout": "1h"})  # idle sources drop the drain's watermark (FLINK-40499)


def _processed(settings) -> int:
    return sum(p["events_total"] for p in ProfileReader.from_settings(settings).all_profiles())


def _exposes_custom_metrics(metrics: str) -> bool:
    return all(f"flink_taskmanager_job_task_operator_{name}" in metrics for name in CUSTOM_METRICS)


def test_taskmanager_killed_mid_stream_recovers_from_its_checkpoint(baseline, cluster, tmp_path):
    baseline_settings, total = baseline
    settings = _cluster_settings(baseline_settings, tmp_path)
    first = cluster.start_taskmanager()
    job = cluster.submit(settings)  # the only slot: the job runs on the first TaskManager
    cluster.start_taskmanager()
    wait_until(lambda: latest_checkpoint(settings.flink.checkpoint_dir) and _processed(settings) > 0,
               180, "a completed checkpoint and the first profiles")

    # Python operators' metrics reach Flink's registry when a bundle ends, which can be after the
    # bundle's first profiles are in Redis: wait for them rather than read once.
    wait_until(lambda: _exposes_custom_metrics(cluster.scrape()), 60,
               f"{', '.join(CUSTOM_METRICS)} on a TaskManager's Prometheus endpoint")

    cluster.kill_taskmanager(first)
    assert _processed(settings) < total  # killed mid-stream
    wait_until(lambda: _processed(settings) == total, 300, "every event, on the surviving TaskManager")
    failures = cluster.rest(f"/jobs/{job}/exceptions")["exceptionHistory"]["entries"]
    assert failures, "the job should have failed over after the TaskManager was killed"
    cluster.stop(job, (tmp_path / "drained").as_uri(), drain=True)
    assert redis_state(settings) == redis_state(baseline_settings)


def test_rescale_from_one_to_two_through_a_savepoint(baseline, cluster, tmp_path):
    baseline_settings, total = baseline
    settings = _cluster_settings(baseline_settings, tmp_path)
    cluster.start_taskmanager()
    cluster.start_taskmanager()
    job = cluster.submit(settings)
    wait_until(lambda: _processed(settings) > 0, 180, "the first profiles")
    savepoint = cluster.stop(job, (tmp_path / "savepoints").as_uri(), drain=False)
    assert _processed(settings) < total  # stopped mid-stream

    job = cluster.submit(settings.with_overrides(flink={"parallelism": 2}), savepoint=savepoint)
    vertices = {v["name"].split(" -> ")[0]: v["parallelism"] for v in cluster.rest(f"/jobs/{job}")["vertices"]}
    assert vertices["user profiles"] == 2  # the model trainer stays at 1 by design
    wait_until(lambda: _processed(settings) == total, 300, "every event at parallelism 2")
    cluster.stop(job, (tmp_path / "drained").as_uri(), drain=True)
    assert redis_state(settings) == redis_state(baseline_settings)
