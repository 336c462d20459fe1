"""Pseudonymization on the real stack: the real replay of ``real_replay`` (conftest.py) run again
with ``privacy.pseudonymize`` as a separate process (the key is in its environment only).

No raw user id is in any Redis key or value or in any output topic, the end state is the clean
run's with every user id replaced by its pseudonym, and the key is in no log.
"""

from __future__ import annotations

import os
import subprocess

import orjson
import pytest
from kafka import KafkaConsumer

from personalization.config.settings import REPO_ROOT
from personalization.core.sessions import session_id
from personalization.serving.redis_store import connect, decode_id, encode_id, entries_index_key, streamed_version_key
from personalization.udfs.pseudonymize import Pseudonymizer
from tests.support import PZ, isolated_settings, redis_state, sessions_of, write_config

KEY_ENV = "PZ_TEST_PSEUDONYM_KEY"
SECRET = "pz-test-pseudonym-key-Vq93-0123456789abcdef"  # >= 32 bytes


@pytest.fixture(scope="module")
def run(real_replay, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("privacy")
    clean = real_replay
    settings = isolated_settings(tmp, events_topic=clean["settings"].kafka.topics.events,
                                 **clean["overrides"], privacy={"pseudonymize": True, "pseudonym_key_env": KEY_ENV})
    config = write_config(settings, tmp / "privacy.yaml")
    env = {**os.environ, KEY_ENV: SECRET}
    job = subprocess.run([*PZ, "run", "--config", str(config)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    logs = job.stdout + job.stderr
    for log_file in (REPO_ROOT / ".venv").glob("lib/python3.11/site-packages/pyflink/log/*"):
        logs += log_file.read_text(errors="replace")
    os.environ[KEY_ENV] = SECRET
    try:
        pseudonym = Pseudonymizer(KEY_ENV)
    finally:
        del os.environ[KEY_ENV]
    return {"settings": settings, "logs": logs, "pseudonym": pseudonym, "redis": redis_state(settings),
            "sessions": sessions_of(settings)}


def _raw_topic(settings, topic: str) -> bytes:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        return b"\n".join(message.value for message in consumer)
    finally:
        consumer.close()


def _redis_dump(settings) -> bytes:
    """Every key and every value under the run's prefix, as one blob."""
    client, parts = connect(settings.redis), []
    for key in client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000):
        parts.append(key)
        kind = client.type(key).decode()
        if kind == "hash":
            parts += [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == "set":
            parts += list(client.smembers(key))
        elif kind == "stream":
            parts += [b for _, fields in client.xrange(key) for kv in fields.items() for b in kv]
        elif kind == "list":  # an erasure index: stream ids
            parts += client.lrange(key, 0, -1)
        else:
            parts.append(client.get(key))
    return b"\n".join(parts)


def test_no_raw_user_id_in_redis_or_in_output_topics(real_replay, run):
    settings = run["settings"]
    topics = settings.kafka.topics
    outputs = b"\n".join(_raw_topic(settings, t) for t in (topics.sessions, topics.late, topics.segment_changes,
                                                            topics.dlq))
    redis = _redis_dump(settings)
    assert len(redis) > 1_000_000 and len(outputs) > 100_000  # there is something to search
    users = {e["user_id"] for e in real_replay["events"]}
    assert [u for u in users if u.encode() in redis] == []
    assert [u for u in users if u.encode() in outputs] == []
    assert run["pseudonym"]("tb-543462").encode() in redis  # the first Taobao user, pseudonymized


def test_profiles_equal_the_pseudonymized_ids_profiles(real_replay, run):
    p = run["pseudonym"]
    assert _user_keys(run["redis"]) == _pseudonymized_state(_user_keys(real_replay["redis"]), p)
    expected = [{**s, "user_id": p(s["user_id"]), "session_id": session_id(p(s["user_id"]), s["start"])}
                for s in real_replay["sessions"]]
    key = lambda s: (s["user_id"], s["start"], s["revision"], s["status"])
    assert run["sessions"] == sorted(expected, key=key)


def test_the_key_is_in_no_log(run):
    assert run["logs"]  # the job did log
    assert SECRET not in run["logs"]


def _pseudonymized_state(state: dict, p) -> dict:
    """The clean run's Redis state as it must look with every user id replaced by its pseudonym."""
    out = {}
    for key, value in state.items():
        if key.startswith(":{") and not key.startswith(":{segment-changes}"):  # a user's own key
            encoded, suffix = key[2:].split("}", 1)
            user = decode_id(encoded)
            if isinstance(value, dict):  # a hash: the profile (or another per-user hash)
                value = dict(value)
                if b"user_id" in value:
                    value[b"user_id"] = orjson.dumps(p(user))
                for field in (b"current_session", b"last_session"):
                    if field in value:
                        brief = orjson.loads(value[field])
                        if brief is not None:
                            brief["session_id"] = session_id(p(user), brief["start"])
                        value[field] = orjson.dumps(brief)
            out[f":{{{encode_id(p(user))}}}{suffix}"] = value
        elif key.startswith(":{segment-changes}:user:"):
            out[streamed_version_key("", p(decode_id(key.rsplit(":", 1)[1])))] = value
        elif key.startswith(":{segment-changes}:entries:"):
            out[entries_index_key("", p(decode_id(key.rsplit(":", 1)[1])))] = value
        elif key == ":{segment-changes}":
            entries = [sorted((f, p(v.decode()).encode() if f == b"user_id" else v) for f, v in entry)
                       for entry in value]
            out[key] = sorted(entries)
        elif key.endswith(":members"):
            out[key] = sorted(p(member.decode()).encode() for member in value)
    return out


def _user_keys(state: dict) -> dict:
    """Profiles, segment changes and audiences. Not the model outputs (the shared models and the
    per-user predictions): the models learn from users in key order, so under other ids their
    numbers differ; the test above shows they hold no raw id."""
    return {k: v for k, v in state.items()
            if k.endswith(":profile") or k.endswith(":members") or k.startswith(":{segment-changes}")}
