"""The job, the reader, the HTTP API, the CLIs and erasure against a real Redis Cluster: 3 masters
+ 3 replicas on loopback, started by ``stack/stack.sh redis-cluster`` for this module only and
deleted afterwards (the single-node stack is left alone).

One run of the same real events on the single node is the reference: the cluster's end state
must equal it key for key (``redis_state``: decoded values, minus the wall-clock ``updated_at``
and stream ids): after an uninterrupted run, after a master SIGKILLed mid-stream, and after the
job SIGKILLed mid-stream and restored from its checkpoint (test_faults' crash test).
"""

from __future__ import annotations

import signal
import subprocess

import httpx
import orjson
import pytest
import redis

from personalization.config.settings import REPO_ROOT
from personalization.pipelines.main import run_job
from personalization.serving.api import api_process
from personalization.serving.erasure import erase_user
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import changes_key, connect, encode_id
from tests.support import (
    PZ,
    SseListener,
    committed_offsets,
    drain_when_done,
    free_port,
    isolated_settings,
    kill_after_checkpoint,
    latest_checkpoint,
    processed_events,
    redis_state,
    replayed_run,
    start_job,
    wait_until,
    write_config,
)

STACK = ("bash", str(REPO_ROOT / "stack" / "stack.sh"), "redis-cluster")
PORTS = range(7101, 7107)  # stack.sh's default REDIS_CLUSTER_PORT and the five after it
NODES = [f"127.0.0.1:{port}" for port in PORTS]
EVENTS = 5_000
KEY = "cluster-test-key"


@pytest.fixture(scope="module")
def redis_cluster(stack):
    subprocess.run([*STACK, "up"], check=True)
    try:
        yield NODES
    finally:
        subprocess.run([*STACK, "reset"], check=True)


@pytest.fixture(scope="module")
def single(stack, datasets, tmp_path_factory):
    """The reference: the events' end state on the single node."""
    settings, events = replayed_run(tmp_path_factory.mktemp("single"), seed=5, limit=EVENTS)
    return settings, len(events)


def on_cluster(single_settings, tmp_path):
    # restart_attempts 0: an exception fails the job instead of being hidden by a restore
    return isolated_settings(tmp_path, events_topic=single_settings.kafka.topics.events,
                             redis={"cluster_nodes": NODES, "retry_backoff_max": 1_000},
                             flink={"restart_attempts": 0})


@pytest.fixture(scope="module")
def clustered(single, redis_cluster, tmp_path_factory):
    settings = on_cluster(single[0], tmp_path_factory.mktemp("clustered"))
    run_job(settings)
    return settings


def _cluster_nodes(port: int) -> dict[int, dict]:
    """``CLUSTER NODES`` as the node on ``port`` sees it: port -> node_id, flags (a set), master_id, ..."""
    return {int(address.split("@")[0].rsplit(":", 1)[1]): {**node, "flags": set(node["flags"].split(","))}
            for address, node in redis.Redis(port=port).execute_command("CLUSTER NODES").items()}


def _without_updated_at(profile: dict) -> dict:
    return {name: value for name, value in profile.items() if name != "updated_at"}


def test_the_cluster_ends_in_the_single_nodes_state_with_keys_on_every_master(single, clustered):
    single_settings, total = single
    state = redis_state(clustered)
    assert state == redis_state(single_settings)
    assert processed_events(clustered) == total
    masters = [port for port, node in _cluster_nodes(PORTS[0]).items() if "master" in node["flags"]]
    prefix = clustered.redis.key_prefix
    per_master = {port: sum(1 for _ in redis.Redis(port=port).scan_iter(match=f"{prefix}:*", count=1000))
                  for port in masters}
    assert len(per_master) == 3 and all(per_master.values()), per_master  # really sharded
    assert sum(per_master.values()) == len(state)


def test_reader_api_and_cli_read_the_cluster_as_the_single_node(single, clustered, tmp_path):
    single_reader = ProfileReader.from_settings(single[0])
    reader = ProfileReader.from_settings(clustered)
    profiles = {p["user_id"]: _without_updated_at(p) for p in reader.all_profiles()}
    assert profiles == {p["user_id"]: _without_updated_at(p) for p in single_reader.all_profiles()}
    sizes = reader.segment_sizes()
    assert sizes and sizes == single_reader.segment_sizes()
    segment, size = max(sizes.items(), key=lambda item: item[1])
    members = reader.members(segment)
    assert len(members) == size and members == single_reader.members(segment)
    assert sorted(orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for _, c in reader.changes()) == sorted(
        orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for _, c in single_reader.changes())
    user = min(members)

    config = write_config(clustered, tmp_path / "cluster.yaml")

    def pz(*args: str) -> str:
        return subprocess.run([*PZ, *args, "--config", str(config)], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=120, check=True).stdout
    assert _without_updated_at(orjson.loads(pz("profile", user))) == profiles[user]
    assert pz("sizes") == "".join(f"{name}\t{n}\n" for name, n in sorted(sizes.items()))
    assert orjson.loads(pz("segments", user)) == single_reader.segments(user)
    assert sorted(pz("members", segment).split()) == sorted(members)
    followed = [orjson.loads(line) for line in pz("follow", "--from", "0", "--limit", "3").splitlines()]
    assert [{k: v for k, v in f.items() if k != "id"} for f in followed] == [c for _, c in reader.changes()[:3]]
    # the maintenance CLIs: the indexes rebuilt from the audience sets and the stream are the
    # ones the job wrote, and no profile has expired
    before = redis_state(clustered)
    assert pz("index-for-erasure") == (f"indexed {sum(sizes.values())} audience memberships and "
                                       f"{len(reader.changes())} stream entries\n")
    assert pz("expire-audiences") == "removed 0 audience memberships of expired profiles\n"
    assert redis_state(clustered) == before

    with api_process(config, free_port(), env={"PZ_API_KEYS": KEY}) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        served = httpx.get(f"{url}/v1/users/{user}/profile", headers={"X-API-Key": KEY})
        assert served.status_code == 200
        assert _without_updated_at(served.json()) == profiles[user]
        segments = httpx.get(f"{url}/v1/users/{user}/segments", headers={"X-API-Key": KEY})
        assert segments.status_code == 200 and segments.json()["segments"] == single_reader.segments(user)["segments"]
        # the live stream, resumed after the user's first change: the user's later changes
        written = [(entry_id, c) for entry_id, c in reader.changes() if c["user_id"] == user]
        assert written, "a member has entered its segment"
        live = SseListener(f"{url}/v1/users/{user}/stream", {"X-API-Key": KEY, "Last-Event-ID": written[0][0]})
        live.start()
        wait_until(lambda: live.of("profile") and len(live.of("change")) >= len(written) - 1, 30,
                   "the stream's profile event and the user's later changes")
        live.stop.set()
        assert [(e["id"], e["data"]) for e in live.of("change")] == written[1:]
        assert live.of("profile")[0]["data"]["version"] == profiles[user]["version"]
        ids = sorted(members)[:50]
        batch = httpx.post(f"{url}/v1/profiles/batch", headers={"X-API-Key": KEY}, json={"ids": ids})
        assert batch.status_code == 200, batch.text
        assert {user_id: _without_updated_at(p) for user_id, p in batch.json()["profiles"].items()} == {
            user_id: profiles[user_id] for user_id in ids}


def test_erasure_removes_the_user_from_every_node(clustered):
    reader = ProfileReader.from_settings(clustered)
    segment = max(reader.segment_sizes().items(), key=lambda item: item[1])[0]
    user = min(reader.members(segment))
    prefix = clustered.redis.key_prefix
    client = connect(clustered.redis)
    before = redis_state(clustered)
    assert any(encode_id(user) in key for key in before)
    assert erase_user(client, prefix, user) > 0
    after = redis_state(clustered)
    assert reader.get(user) is None
    assert not [key for key in after if f"{{{encode_id(user)}}}" in key or key.endswith(f":{encode_id(user)}")]
    assert all(user.encode() not in value for value in after.values() if isinstance(value, list))
    assert all(record["user_id"] != user for _, record in reader.changes())
    assert {key for key in before if encode_id(user) not in key} == set(after)  # nobody else's key went


def test_a_master_killed_mid_stream_fails_over_and_the_job_ends_in_the_same_state(single, redis_cluster, tmp_path):
    single_settings, total = single
    settings = on_cluster(single_settings, tmp_path)
    client = start_job(settings)
    wait_until(lambda: processed_events(settings) > 0, 180, "the first profiles on the cluster")
    # the master of the change stream's slot: every batch with a segment change writes there
    victim = connect(settings.redis).get_node_from_key(changes_key(settings.redis.key_prefix))
    witness = next(port for port in PORTS if port != victim.port)  # asked about the cluster after the kill
    nodes = _cluster_nodes(witness)
    assert "master" in nodes[victim.port]["flags"]
    replicas = {port for port, node in nodes.items() if node["master_id"] == nodes[victim.port]["node_id"]}
    assert replicas, "the master has no replica to promote"
    assert 0 < processed_events(settings) < total  # mid-stream
    subprocess.run([*STACK, "kill", str(victim.port)], check=True)

    def failed_over() -> bool:
        nodes = _cluster_nodes(witness)
        return "fail" in nodes[victim.port]["flags"] and any("master" in nodes[port]["flags"] for port in replicas)
    wait_until(failed_over, 60, f"the replica of the killed master {victim.port} to be promoted")

    client.get_job_execution_result().result()  # raises if the job failed (no restarts allowed)
    assert redis_state(settings) == redis_state(single_settings)


def test_the_job_killed_mid_stream_restores_into_the_same_state_on_the_cluster(single, redis_cluster, tmp_path):
    """test_faults' crash test on the cluster: the job SIGKILLed once a checkpoint with committed
    offsets exists, restored from it, drained when every event is processed (unbounded, as a
    restored Kafka source does not end at bounded offsets; no idleness, see test_faults)."""
    single_settings, total = single
    settings = isolated_settings(tmp_path, events_topic=single_settings.kafka.topics.events,
                                 redis={"cluster_nodes": NODES}, kafka={"bounded": False},
                                 time={"idle_timeout": "1h"}, flink={"checkpoint_interval": 1_000})
    assert kill_after_checkpoint(settings, tmp_path) == -signal.SIGKILL
    assert 0 < committed_offsets(settings) < total  # the restore starts past some records, not past all

    client = start_job(settings.with_overrides(flink={"savepoint_path": latest_checkpoint(settings.flink.checkpoint_dir)}))
    drain_when_done(client, settings, total, tmp_path)
    assert redis_state(settings) == redis_state(single_settings)
