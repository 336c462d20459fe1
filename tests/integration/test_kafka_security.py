"""Kafka with SASL: the job and the DLQ, rules and erase CLIs connect to a broker that requires a
login, with the credentials of ``kafka.properties``, and the CLIs fail in one clear line without.

The broker is a second, private one (tests/kafka_broker.py) with only a SASL_PLAINTEXT listener.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from personalization.config.settings import REPO_ROOT, Settings, Topics, load_settings
from personalization.pipelines.main import run_job
from personalization.config.kafka import client_config, kafka_client
from personalization.topics.admin import ensure_topics
from personalization.topics.records import read_topic
from personalization.replay.producer import RawRecord, produce_raw
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect
from tests.kafka_broker import SaslKafka
from tests.support import PZ, TEST_PREFIX, write_config

PASSWORD = "alice-Pw-0f-the-test"
FAST_FAIL = {"bootstrap.timeout.ms": "5000"}  # kafka-python's own wait for a first broker (default 30 s)


@pytest.fixture(scope="module")
def broker(stack, tmp_path_factory):
    kafka = SaslKafka(tmp_path_factory.mktemp("sasl-kafka"), {"alice": PASSWORD}).start()
    yield kafka
    kafka.stop()


def settings_for(broker: SaslKafka, tmp_path: Path, properties: dict[str, str]) -> Settings:
    run = uuid.uuid4().hex[:10]
    return load_settings().with_overrides(
        kafka={"bootstrap_servers": broker.bootstrap, "properties": properties, "bounded": True,
               "group_id": f"g-{run}", "topics": {key: f"sasl-{run}-{key}" for key in Topics.keys()}},
        redis={"key_prefix": f"{TEST_PREFIX}:{run}"},
        flink={"checkpoint_dir": (tmp_path / "checkpoints").as_uri(), "restart_attempts": 0},
        learning={"snapshot_dir": str(tmp_path / "models")},
    )


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PZ, *args, "--config", str(config)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_job_and_clis_connect_with_credentials(broker: SaslKafka, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The password comes from the environment through Kafka's EnvVarConfigProvider placeholder,
    resolved by the Java clients in the job and by the translation for the Python tools."""
    properties = {**broker.client_properties("alice", "${env:PZ_TEST_KAFKA_PASSWORD}"),
                  "config.providers": "env",
                  "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider"}
    settings = settings_for(broker, tmp_path, properties)
    monkeypatch.setenv("PZ_TEST_KAFKA_PASSWORD", PASSWORD)  # this process's own reads and writes
    ensure_topics(settings)
    config = write_config(settings, tmp_path / "job.yaml")
    assert PASSWORD not in config.read_text()
    topics = settings.kafka.topics

    rules = cli(config, "rules", "publish", str(settings.rules.path))
    assert rules.returncode == 0, rules.stderr
    assert raw_records(settings, topics.rules) == [settings.rules.path.read_bytes()]

    erase = cli(config, "erase", "sasl-erased-user")
    assert erase.returncode == 0, erase.stderr
    assert [r["user_id"] for r in read_topic(settings, topics.erasure)] == ["sasl-erased-user"]

    event = {"event_id": "e-1", "user_id": "sasl-user", "event_type": "page_view", "ts": 1511658000000,
             "schema_version": 1, "source": "synthetic"}
    produce_raw([RawRecord(orjson.dumps(event), b"sasl-user", event["ts"]),
                 RawRecord(b"\x00not json", None, event["ts"])],
                settings.kafka.bootstrap_servers, topics.events, progress=False,
                config=client_config(KafkaProducer, settings))
    job = cli(config, "run")  # bounded: ends at the offsets latest at its start
    assert job.returncode == 0, job.stderr[-3000:]
    assert PASSWORD not in job.stdout + job.stderr
    reader = ProfileReader(connect(settings.redis), settings.redis.key_prefix)
    try:
        assert reader.get("sasl-user") is not None
        dlq = cli(config, "dlq", "list", "--json")
        assert dlq.returncode == 0, dlq.stderr
        assert len(dlq.stdout.splitlines()) == 1  # the malformed record, read back through SASL
    finally:
        reader.delete_all()


def raw_records(settings: Settings, topic: str) -> list[bytes]:
    """Every record of a topic, read with the settings' login (the rules topic is YAML, not JSON)."""
    consumer = kafka_client(KafkaConsumer, settings, topic, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return [message.value for message in consumer]
    finally:
        consumer.close()


@pytest.mark.parametrize("login", ["none", "wrong password"])
def test_clis_fail_clearly_without_credentials(broker: SaslKafka, tmp_path: Path, login: str) -> None:
    good = settings_for(broker, tmp_path, broker.client_properties("alice", PASSWORD))
    ensure_topics(good)
    properties = {} if login == "none" else broker.client_properties("alice", "not-" + PASSWORD)
    config = write_config(settings_for(broker, tmp_path, {**properties, **FAST_FAIL}).with_overrides(
        kafka={"topics": good.kafka.topics.model_dump()}), tmp_path / "bad.yaml")
    runs = {
        "rules": cli(config, "rules", "publish", str(good.rules.path)),
        "erase": cli(config, "erase", "someone"),
        "dlq": cli(config, "dlq", "list"),
    }
    for name, run in runs.items():
        assert run.returncode == 1, (name, run.stdout, run.stderr)
        assert f"Error: Kafka {broker.bootstrap} (security.protocol" in run.stderr, (name, run.stderr)
        assert "Traceback" not in run.stderr and PASSWORD not in run.stderr, (name, run.stderr)
    assert raw_records(good, good.kafka.topics.rules) == []  # nothing got through
    assert raw_records(good, good.kafka.topics.erasure) == []


def test_job_with_a_refused_login_fails_naming_the_cause(broker: SaslKafka, tmp_path: Path) -> None:
    good = settings_for(broker, tmp_path, broker.client_properties("alice", PASSWORD))
    ensure_topics(good)
    wrong = "not-" + PASSWORD
    bad = good.with_overrides(kafka={"properties": broker.client_properties("alice", wrong)})
    with pytest.raises(Exception) as failure:  # restart_attempts 0: the first failure ends the job
        run_job(bad)
    text = str(failure.value)
    assert "SaslAuthenticationException: Authentication failed: Invalid username or password" in text
    assert wrong not in text
