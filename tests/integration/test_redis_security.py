"""Redis with an ACL user, a password and TLS: a real TLS-only redis-server (the machine's
redis-server, built with TLS) with a CA made by the test; the reader and the job connect with
user, password (from the environment) and CA from the config, and nothing less gets in."""

from __future__ import annotations

import os
import subprocess

import pytest
import redis

from personalization.config.settings import REPO_ROOT, load_settings
from personalization.replay.producer import produce
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import check_connection, connect
from tests.support import PZ, TEST_PREFIX, RedisServer, isolated_settings, make_tls_files, write_config

USER, SECRET = "pz-job", "tls-acl-Secret-42"


@pytest.fixture
def tls_redis(tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    # The default user is off: only the job's ACL user, limited to the test keys, gets in.
    server = RedisServer(tmp_path / "redis", "--user", "default", "off", "--user", USER, "on", f">{SECRET}",
                         f"~{TEST_PREFIX}:*", "&*", "+@all", tls=tls).start()
    yield server, tls
    server.stop()


def test_reader_connects_with_acl_user_password_and_tls_only(tls_redis, monkeypatch):
    server, tls = tls_redis
    config = load_settings().with_overrides(redis={
        "port": server.port, "username": USER, "tls": True, "tls_ca_file": str(tls.ca),
        "key_prefix": f"{TEST_PREFIX}:tls"}).redis
    monkeypatch.setenv("PZ_REDIS_PASSWORD", SECRET)
    client = connect(config)
    check_connection(client, config)
    assert client.connection_pool.connection_class is redis.SSLConnection  # TLS, not a plaintext fallback
    client.set(f"{TEST_PREFIX}:tls:probe", "1")
    assert client.get(f"{TEST_PREFIX}:tls:probe") == b"1"
    with pytest.raises(redis.exceptions.NoPermissionError):  # the ACL holds: keys outside the prefix
        client.set("elsewhere", "1")

    with pytest.raises(redis.ConnectionError):  # plaintext to the TLS port
        connect(config.model_copy(update={"tls": False})).ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):  # the system CAs do not know it
        connect(config.model_copy(update={"tls_ca_file": ""})).ping()
    monkeypatch.setenv("PZ_REDIS_PASSWORD", "wrong-" + SECRET)
    with pytest.raises(PermissionError, match=f"authentication failed for user '{USER}'") as wrong:
        check_connection(connect(config), config)
    assert SECRET not in str(wrong.value)


def test_job_writes_profiles_over_tls_as_the_acl_user(stack, tls_redis, tmp_path):
    server, tls = tls_redis
    settings = isolated_settings(tmp_path, redis={"port": server.port, "username": USER, "tls": True,
                                                  "tls_ca_file": str(tls.ca)},
                                 flink={"restart_attempts": 0})
    produce([{"schema_version": 1, "event_id": "e1", "event_type": "click", "ts": 1_511_658_000_000,
              "user_id": "erin"}], settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    config_file = write_config(settings, tmp_path / "job.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PZ_REDIS_PASSWORD")}
    run = subprocess.run([*PZ, "run", "--config", str(config_file)],
                         cwd=REPO_ROOT, env={**env, "PZ_REDIS_PASSWORD": SECRET}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    os.environ["PZ_REDIS_PASSWORD"] = SECRET
    try:
        profile = ProfileReader(connect(settings.redis), settings.redis.key_prefix).get("erin")
    finally:
        del os.environ["PZ_REDIS_PASSWORD"]
    assert profile["counts"] == {"click": 1}
    assert SECRET not in run.stdout + run.stderr
