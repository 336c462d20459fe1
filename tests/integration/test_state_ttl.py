"""Users inactive longer than ``profile.state_ttl`` expire from the job's state, and with
``pz expire-audiences --every`` (the sweeper beside the job) from the audience sets (issue 19,
point 5): a real unbounded job run with 4 s TTLs (state and profile) and rules that put every
user in one segment."""

from __future__ import annotations

import subprocess

import orjson

from personalization.replay.producer import RawRecord, produce_raw
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect, profile_key
from tests.support import PZ, isolated_settings, start_job, wait_until, write_config

T = 1_511_658_000_000


def _event(user: str, n: int, ts: int) -> RawRecord:
    return RawRecord(orjson.dumps({"schema_version": 1, "event_id": f"{user}-{n}", "event_type": "click", "ts": ts,
                                   "user_id": user}), user.encode(), ts)


def test_an_inactive_user_expires_from_state_and_audiences_and_comes_back_fresh(stack, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text('version: "ttl"\nsegments:\n  everyone: {entry: true}\n')
    settings = isolated_settings(
        tmp_path, kafka={"bounded": False, "topics": {"partitions": 1}}, flink={"restart_attempts": 0}, learning={"enabled": False},
        rules={"path": str(rules)},
        time={"windows": {"sizes": ["4s"], "buckets": 4}, "session_gap": "1s", "max_session_length": "2s",
              "allowed_lateness": "1s"},
        redis={"profile_ttl": "4s", "batch_delay": 0}, profile={"state_ttl": "4s", "dedup_horizon": "4s"})
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    reader, client = ProfileReader.from_settings(settings), connect(settings.redis)
    prefix = settings.redis.key_prefix
    job = start_job(settings)
    try:
        # u's event, then a later event of another user moves the watermark past it: u enters
        produce_raw([_event("u", 1, T), _event("u", 2, T + 1_000), _event("filler", 1, T + 60_000)], bootstrap,
                    topic, partitioner=0, progress=False)
        first = wait_until(lambda: (p := reader.get("u")) and p["segments"] and p, 120, "u profiled and in a segment")
        assert first["events_total"] == 2 and reader.members("everyone") >= {"u"}
        # nothing more of u: its profile expires in Redis (redis.profile_ttl), its state in Flink
        wait_until(lambda: not client.exists(profile_key(prefix, "u")), 30, "u's profile expired")
        assert "u" in reader.members("everyone")  # audience sets have no TTL ...
        sweeper = subprocess.Popen([*PZ, "expire-audiences", "--every", "1s", "--config",
                                    str(write_config(settings, tmp_path / "sweeper.yaml"))],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:  # ... the sweeper removes u (and the filler, expired too), and sweeps on
            wait_until(lambda: "u" not in reader.members("everyone"), 60, "u swept from the audience")
            first_sweep = sweeper.stdout.readline()
            assert first_sweep.startswith("removed ") and int(first_sweep.split()[1]) >= 1, first_sweep
            assert sweeper.stdout.readline() == "removed 0 audience memberships of expired profiles\n"
            assert sweeper.poll() is None  # still running: a loop, not one sweep
        finally:
            sweeper.terminate()
            sweeper.communicate(timeout=30)
        produce_raw([_event("u", 3, T + 120_000), _event("filler", 2, T + 180_000)], bootstrap, topic,
                    partitioner=0, progress=False)
        again = wait_until(lambda: (p := reader.get("u")) and p["segments"] and p, 60, "u profiled again")
        # a fresh state: one event, its first version; without the state TTL it would count 3
        assert (again["events_total"], again["first_seen"]) == (1, T + 120_000)
        assert "u" in reader.members("everyone")  # entered again, as a new user
    finally:
        job.cancel().result()
