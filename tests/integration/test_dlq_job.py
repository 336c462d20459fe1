"""Every record the broker accepts on ``events`` reaches the DLQ whole (issue 19, point 1), and so
does every bad record on the control topics (rules, erasure requests).

A real job run: random bytes just under the broker's record limit, 180 KB of control bytes (their
JSON-escaped envelope was 1 MB, and the job crash-looped on it) and small rejects of other
reasons, between valid events. The job runs with no restart allowed (one failure fails the run);
the dead letters hold the original bytes, and the DLQ CLI replays them byte for byte.
"""

from __future__ import annotations

import base64
import os
import subprocess

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from personalization.config.settings import REPO_ROOT
from personalization.core.dead_letter import HEADROOM_BYTES, dlq_max_message_bytes
from personalization.tools.dlq import cli
from personalization.pipelines.main import run_job
from personalization.topics.admin import dlq_size_problem
from personalization.replay.producer import RawRecord, produce_raw
from personalization.serving.reader import ProfileReader
from tests.support import PZ, dead_letters, isolated_settings, read_all

T = 1_511_658_000_000
RECORD_OVERHEAD = 200  # a one-record batch's header and record fields, well above what Kafka adds


def click(event_id: str, user: str, ts: int) -> bytes:
    return orjson.dumps({"schema_version": 1, "event_id": event_id, "event_type": "click", "ts": ts,
                         "user_id": user})


def topic_limit(settings, topic: str) -> int:
    """The broker's limit for a record batch of ``topic`` (its max.message.bytes, else the broker's)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, ["max.message.bytes"])],
                                           config_filter="all")
        return int(described["topic"][topic]["max.message.bytes"]["value"])
    finally:
        admin.close()


@pytest.fixture(scope="module", params=["at-least-once", "exactly-once"])
def run(stack, tmp_path_factory, request):
    settings = isolated_settings(tmp_path_factory.mktemp("dlq-job"),
                                 kafka={"delivery_guarantee": request.param},
                                 flink={"restart_attempts": 0})  # any exception fails the run
    topics = settings.kafka.topics
    limit = topic_limit(settings, topics.events)
    assert limit == settings.kafka.max_message_bytes, "the config's kafka.max_message_bytes is not the broker's"
    assert topic_limit(settings, topics.dlq) == limit + HEADROOM_BYTES  # as ensure_topics created it
    largest = os.urandom(limit - RECORD_OVERHEAD)
    control = b"\x01\x1f" * 90_000
    rejects = {  # reason -> bytes, in the order sent
        "too_large": largest,
        "not_json": b'{"schema_version": 1, "event_id": "{}:*',
        "not_utf8": b"\xff\xfe" + os.urandom(1000),
        "schema_violation": orjson.dumps({"schema_version": 1, "event_id": "s", "event_type": "click",
                                          "ts": str(T), "user_id": "{}:*"}),
    }
    records = [RawRecord(click("v1", "ann", T), b"ann", T),
               RawRecord(largest, None, T + 1),
               RawRecord(click("v2", "bea", T + 2), b"bea", T + 2),
               RawRecord(control, None, T + 3),
               *(RawRecord(value, None, T + 4) for reason, value in rejects.items() if reason != "too_large"),
               RawRecord(click("v3", "ann", T + 5), b"ann", T + 5)]
    produce_raw(records, settings.kafka.bootstrap_servers, settings.kafka.topics.events, partitioner=0,
                progress=False, config={"max_request_size": limit})
    run_job(settings)
    return {"settings": settings, "limit": limit, "records": records, "largest": largest, "control": control,
            "rejects": rejects, "letters": dead_letters(settings)}


def test_the_fault_would_happen_with_an_envelope(run):
    """The records are the ones that broke the old JSON envelope: its payload alone was too large."""
    assert len(run["largest"]) > 0.99 * run["limit"]
    assert len(base64.b64encode(run["largest"])) > run["limit"]
    assert len(orjson.dumps(run["control"].decode())) > 1 << 20


def test_every_reject_is_in_the_dlq_byte_for_byte(run):
    letters = sorted(run["letters"], key=lambda letter: letter.offset)  # the DLQ's partitions: any order
    events = run["settings"].kafka.topics.events
    rejected = [r for r in run["records"] if not r.key]  # the valid events are keyed by user
    assert [(letter.value, letter.timestamp) for letter in letters] == [(r.value, r.timestamp_ms) for r in rejected]
    assert [letter.reason for letter in letters] == ["too_large", "too_large", "not_json", "not_utf8",
                                                     "schema_violation"]
    assert [letter.offset for letter in letters] == [1, 3, 4, 5, 6]
    assert {(letter.topic, letter.partition) for letter in letters} == {(events, 0)}
    assert letters[0].detail == f"{len(run['largest'])} bytes > limit {run['settings'].validation.max_event_bytes}"
    assert letters[-1].path == "$.ts"


def test_valid_events_around_them_are_processed(run):
    reader = ProfileReader.from_settings(run["settings"])
    assert (reader.get("ann")["events_total"], reader.get("bea")["events_total"]) == (2, 1)


def test_the_dlq_cli_replays_them_byte_for_byte(run):
    settings = run["settings"]
    topics = settings.kafka.topics
    before = {(r.partition, r.offset) for r in read_all(settings, topics.events)}
    result = CliRunner().invoke(cli, ["replay", "--set", f"kafka.topics.dlq={topics.dlq}",
                                      "--set", f"kafka.topics.events={topics.events}"])
    assert result.exit_code == 0, result.output
    assert "re-published 5 record(s)" in result.output
    replayed = [r for r in read_all(settings, topics.events) if (r.partition, r.offset) not in before]
    assert sorted((r.value, r.timestamp) for r in replayed) == sorted(
        (r.value, r.timestamp_ms) for r in run["records"] if not r.key)


def test_a_dlq_topic_too_small_for_the_dead_letters_stops_the_job_before_it_starts(stack, tmp_path):
    settings = isolated_settings(tmp_path)
    assert dlq_size_problem(settings) is None  # as ensure_topics created them
    assert "more than kafka.max_message_bytes (1024)" in dlq_size_problem(
        settings.with_overrides(kafka={"max_message_bytes": 1024}))
    small = f"{settings.kafka.topics.dlq}-small"  # created as by hand: the broker's default limit
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    admin.create_topics([NewTopic(small, 1, 1)])
    try:
        needed = settings.kafka.max_message_bytes + HEADROOM_BYTES
        result = subprocess.run(
            [*PZ, "run", "--set", f"kafka.topics.dlq={small}",
             "--set", f"kafka.topics.events={settings.kafka.topics.events}", "--set", "kafka.bounded=true"],
            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        assert result.returncode == 2, result.stderr
        assert (f"topic {small!r} accepts records of up to {settings.kafka.max_message_bytes} bytes; a dead letter "
                f"needs up to {needed}") in result.stderr
        assert f"--add-config max.message.bytes={needed}" in result.stderr
    finally:
        admin.delete_topics([small])
        admin.close()


def test_random_bytes_on_the_control_topics_reach_the_dlq_whole_and_the_job_goes_on(stack, tmp_path):
    """A megabyte of random bytes on the rules or the erasure topic once restarted the job forever:
    read as a string, each invalid byte became U+FFFD (three bytes), and the dead letter outgrew
    the DLQ's limit. The control topics are now read as bytes."""
    settings = isolated_settings(tmp_path, flink={"restart_attempts": 0})  # any exception fails the run
    topics, bootstrap = settings.kafka.topics, settings.kafka.bootstrap_servers
    limit = topic_limit(settings, topics.events)
    noise = os.urandom(limit - RECORD_OVERHEAD)
    assert len(noise.decode("utf-8", "replace").encode()) > dlq_max_message_bytes(limit)  # the old fault
    not_json = b'{"user_id": "{}:*'
    produce_raw([RawRecord(click("v1", "ann", T), b"ann", T)], bootstrap, topics.events, progress=False)
    for topic, values in ((topics.erasure, [noise, not_json]), (topics.rules, [noise])):
        assert topic_limit(settings, topic) == limit
        produce_raw([RawRecord(value, None, T) for value in values], bootstrap, topic, partitioner=0,
                    progress=False, config={"max_request_size": limit})
    run_job(settings)
    letters = dead_letters(settings)
    by_topic = {topic: sorted((letter.value, letter.reason) for letter in letters if letter.topic == topic)
                for topic in (topics.erasure, topics.rules)}  # the DLQ's partitions: any order
    assert by_topic == {topics.erasure: sorted([(noise, "invalid_erasure_request"),
                                                (not_json, "invalid_erasure_request")]),
                        topics.rules: [(noise, "invalid_rules")]}
    assert len(letters) == 3
    details = {letter.value: letter.detail for letter in letters if letter.topic == topics.erasure}
    assert details[noise].startswith("not JSON") and details[not_json].startswith("not JSON")
    assert next(letter.detail for letter in letters if letter.topic == topics.rules).startswith("not UTF-8")
    assert ProfileReader.from_settings(settings).get("ann")["events_total"] == 1
