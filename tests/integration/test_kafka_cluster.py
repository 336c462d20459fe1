"""Replicated Kafka: a broker of a 3-node KRaft cluster killed mid-stream (SIGKILL) changes nothing.

The cluster is ``stack.sh kafka-cluster``'s, started for this test only (its own ports and state)
and stopped after it; so is a private Redis server (both runs, under prefixes of their own): the
test needs nothing of the shared stack. Topics are
created by the tools with 3 replicas and min.insync.replicas 2; the producers (the replay's, the
job's exactly-once sinks) write with acks=all. An uninterrupted run on the same events is the
reference for the Redis end state and for every output topic, read to its end offsets with
read_committed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from tests.kafka_broker import KafkaCluster
from tests.support import (EXACTLY_ONCE, TOPIC_KEYS, RedisServer, drain_when_done, fault_run_settings, processed_events,
                           read_all, redis_state, replayed_run, start_job, wait_until)

SLICE = 3_000
# The topics the job writes (besides Redis): all but its inputs and the webhook service's DLQ.
OUTPUTS = tuple(key for key in TOPIC_KEYS if key not in ("events", "rules", "erasure", "webhooks_dlq"))


@pytest.fixture
def kafka_cluster(tmp_path):
    cluster = KafkaCluster(tmp_path / "kafka-cluster")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def redis_port(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server.port
    finally:
        server.stop()


def _outputs(settings) -> dict[str, list[bytes]]:
    """Each output topic's committed records, sorted: how partitions interleave is scheduling's."""
    return {key: sorted(record.value for record in read_all(settings, getattr(settings.kafka.topics, key),
                                                             isolation_level="read_committed"))
            for key in OUTPUTS}


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (it has not exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _led_by_others(cluster: KafkaCluster, topics: list[str], partitions: list, victim: int) -> bool:
    try:
        now = cluster.partitions(topics)
    except KafkaError:  # the client asked the killed node, still in the survivors' metadata: ask again
        return False
    return all(now[tp]["leader_id"] not in (victim, -1) for tp in partitions)


def _min_insync(bootstrap: str, topics: list[str]) -> set[tuple[str, str] | None]:
    """(value, source) of each topic's min.insync.replicas; None while a broker does not know the topic yet."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t, ["min.insync.replicas"])
                                            for t in topics])
    finally:
        admin.close()
    found = {name: configs.get("min.insync.replicas") for name, configs in described["topic"].items()}
    return {(c["value"], c["config_source"]) if c else None for c in (found.get(t) for t in topics)}


def test_a_broker_killed_mid_stream_with_acks_all_and_exactly_once_changes_nothing(datasets, kafka_cluster, redis_port,
                                                                                     tmp_path):
    replicated = {"bootstrap_servers": kafka_cluster.bootstrap, "replication_factor": 3, "min_insync_replicas": 2}
    redis = {"port": redis_port}
    baseline, events = replayed_run(tmp_path / "baseline", seed=5, limit=SLICE, kafka={**EXACTLY_ONCE, **replicated},
                                    redis=redis)
    settings = fault_run_settings(baseline, tmp_path, kafka=replicated, redis=redis)
    topics = [settings.kafka.topics.events, *(getattr(settings.kafka.topics, key) for key in OUTPUTS)]
    # as the tools created them, from the config
    assert {len(p["replica_nodes"]) for p in kafka_cluster.partitions(topics).values()} == {3}
    # set on each topic (the brokers' default is 2 as well)
    wait_until(lambda: _min_insync(kafka_cluster.bootstrap, topics) == {("2", "DYNAMIC_TOPIC_CONFIG")}, 30,
               "min.insync.replicas 2 on every topic")

    client = start_job(settings)
    wait_until(lambda: processed_events(settings) > 0, 120, "the first profiles")
    leaders = {tp: p["leader_id"] for tp, p in kafka_cluster.partitions(topics).items()}
    victim, led = Counter(leaders.values()).most_common(1)[0]  # the node leading most of the job's partitions
    pid = kafka_cluster.pid(victim)
    kafka_cluster.kill(victim)
    assert not _running(pid)
    assert processed_events(settings) < len(events)  # mid-stream
    moved = [tp for tp, leader in leaders.items() if leader == victim]
    assert len(moved) == led > 0
    wait_until(lambda: _led_by_others(kafka_cluster, topics, moved, victim), 60,
               f"leadership of the {led} partitions node {victim} led to move")

    drain_when_done(client, settings, len(events), tmp_path)
    assert redis_state(settings) == redis_state(baseline)
    outputs = _outputs(settings)
    assert outputs == _outputs(baseline)
    assert outputs["sessions"] and outputs["segment_changes"]  # the comparison compared records
