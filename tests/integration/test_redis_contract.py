"""The Redis serving contract against a real server: versioned compare-and-set, auth, secrets."""

from __future__ import annotations

import os
import subprocess

import pytest

from personalization.config.settings import REPO_ROOT, load_settings
from personalization.replay.producer import produce
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import ProfileWriter, check_connection, connect
from tests.support import PZ, TEST_PREFIX, RedisServer, isolated_settings, write_config

SECRET = "s3cr3t-Zq81-not-in-logs"


def _profile(version: int, events: int) -> dict:
    return {"user_id": "carol", "version": version, "events_total": events, "counts": {"click": events}}


def test_a_write_with_an_older_or_equal_version_is_refused(stack):
    settings = load_settings().with_overrides(redis={"key_prefix": f"{TEST_PREFIX}:stale-{os.getpid()}"})
    client = connect(settings.redis)
    writer = ProfileWriter(client, settings.redis.key_prefix, ttl_ms=60_000)
    reader = ProfileReader(client, settings.redis.key_prefix)
    try:
        assert writer.write(_profile(5, 5))
        assert not writer.write(_profile(3, 3))
        assert not writer.write(_profile(5, 99))
        assert reader.get("carol")["events_total"] == 5
        assert writer.write(_profile(6, 6))
        assert (reader.get("carol")["version"], reader.get("carol")["events_total"]) == (6, 6)
        assert 0 < client.pttl(f"{settings.redis.key_prefix}:{{carol}}:profile") <= 60_000
    finally:
        reader.delete_all()


def test_writes_load_the_scripts_again_when_the_server_lost_them(stack):
    """After a restart without the scripts (or SCRIPT FLUSH) a batch is answered NOSCRIPT: the
    writer loads them and sends the batch again, once, in full."""
    settings = load_settings().with_overrides(redis={"key_prefix": f"{TEST_PREFIX}:noscript-{os.getpid()}"})
    client = connect(settings.redis)
    writer = ProfileWriter(client, settings.redis.key_prefix, ttl_ms=60_000)
    reader = ProfileReader(client, settings.redis.key_prefix)
    change = {"user_id": "carol", "segment": "buyers", "action": "enter", "event_time": 1, "rules_version": "r1",
              "seq": 1, "cause": {"rule": "buyers"}}
    try:
        assert writer.write(_profile(1, 1))
        client.script_flush()
        assert writer.write(_profile(2, 2), [change])
        assert reader.get("carol")["events_total"] == 2
        assert client.xlen(f"{settings.redis.key_prefix}:{{segment-changes}}") == 1
        assert client.smembers(f"{settings.redis.key_prefix}:segment:{{buyers}}:members") == {b"carol"}
    finally:
        reader.delete_all()


@pytest.fixture
def secured_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", "--requirepass", SECRET).start()
    yield server
    server.stop()


def test_reader_needs_the_configured_secret_and_never_shows_it(secured_redis, monkeypatch):
    config = load_settings().with_overrides(redis={"port": secured_redis.port}).redis
    monkeypatch.delenv("PZ_REDIS_PASSWORD", raising=False)
    with pytest.raises(PermissionError, match="a password is required") as refused:
        check_connection(connect(config), config)
    monkeypatch.setenv("PZ_REDIS_PASSWORD", "wrong-password")
    with pytest.raises(PermissionError, match="authentication failed for user 'default'") as wrong:
        check_connection(connect(config), config)
    assert "wrong-password" not in str(wrong.value) and SECRET not in str(refused.value)
    monkeypatch.setenv("PZ_REDIS_PASSWORD", SECRET)
    check_connection(connect(config), config)


def test_job_authenticates_with_the_secret_from_the_environment_only(stack, secured_redis, tmp_path):
    settings = isolated_settings(tmp_path)
    produce([{"schema_version": 1, "event_id": "e1", "event_type": "click", "ts": 1_511_658_000_000,
              "user_id": "dave"}], settings.kafka.bootstrap_servers, settings.kafka.topics.events,
            progress=False)
    config_file = write_config(settings.with_overrides(redis={"port": secured_redis.port},
                                                       flink={"restart_attempts": 0}), tmp_path / "job.yaml")
    command = [*PZ, "run", "--config", str(config_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PZ_REDIS_PASSWORD")}

    refused = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "a password is required: set PZ_REDIS_PASSWORD" in refused.stdout + refused.stderr

    accepted = subprocess.run(command, cwd=REPO_ROOT, env={**env, "PZ_REDIS_PASSWORD": SECRET},
                              capture_output=True, text=True, timeout=300)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    config = settings.with_overrides(redis={"port": secured_redis.port}).redis
    os.environ["PZ_REDIS_PASSWORD"] = SECRET
    try:
        profile = ProfileReader(connect(config), config.key_prefix).get("dave")
    finally:
        del os.environ["PZ_REDIS_PASSWORD"]
    assert profile["counts"] == {"click": 1}
    logs = refused.stdout + refused.stderr + accepted.stdout + accepted.stderr
    for log_file in (REPO_ROOT / ".venv").glob("lib/python3.11/site-packages/pyflink/log/*"):
        logs += log_file.read_text(errors="replace")
    assert SECRET not in logs
