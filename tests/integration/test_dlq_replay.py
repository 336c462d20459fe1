"""The DLQ CLI on the real broker: list, dry run and replay of dead letters (``core.dead_letter``).

No Flink job: the dead letters are produced directly, as the job writes them (value and headers), into
a fresh DLQ/events topic pair that is deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
from click.testing import CliRunner, Result
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from personalization.config.settings import Settings, load_settings
from personalization.tools.dlq import DlqRecord, Selection, cli, parse_since
from personalization.replay.producer import RawRecord, produce_raw
from personalization.udfs.validation import Reason, Rejection, dead_letter
from tests.support import read_all

T = 1_511_658_000_000           # event time of the rejected records (2017, like the datasets)
REJECTED = 1_795_461_137_107    # wall-clock time of the first rejection
PARTITIONS = 2

ALICE = orjson.dumps({"schema_version": 1, "event_id": "e1", "event_type": "page_view", "ts": T,
                      "user_id": "alice", "page": "/ünïcode"})
NOT_UTF8 = b'\xff\xfe{"user_id": "bob"}\x80'
BAD_TS = orjson.dumps({"schema_version": 1, "event_id": "e3", "event_type": "click", "ts": str(T),
                       "user_id": "carol"})

# (original bytes, rejection, source partition, source offset, Kafka record timestamp, rejected at)
REJECTIONS = [
    (ALICE, Rejection(Reason.TIMESTAMP_MISMATCH, f"ts {T} differs from the Kafka record timestamp {T + 7}", "$.ts"),
     0, 11, T + 7, REJECTED),
    (NOT_UTF8, Rejection(Reason.NOT_UTF8, "invalid UTF-8 at byte 0"), 1, 4, T + 60_000, REJECTED + 1_000),
    (BAD_TS, Rejection(Reason.SCHEMA_VIOLATION, "data.ts must be integer", "$.ts"), 3, 9, T + 120_000,
     REJECTED + 2_000),
]
LETTERS = [dead_letter(raw, rejection, "events", partition, offset, record_ts, rejected_at)
           for raw, rejection, partition, offset, record_ts, rejected_at in REJECTIONS]
REPLAYED = ("timestamp_mismatch", "not_utf8")


@pytest.fixture
def settings(stack) -> Iterator[Settings]:
    """A DLQ holding the three dead letters (spread over both partitions) and an empty events topic."""
    run = uuid.uuid4().hex[:10]
    settings = load_settings().with_overrides(
        kafka={"topics": {"events": f"t-{run}-events", "dlq": f"t-{run}-dlq"}})
    topics = [settings.kafka.topics.events, settings.kafka.topics.dlq]
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in topics])
        try:
            letters = [RawRecord(letter.value, headers=tuple(letter.headers().items())) for letter in LETTERS]
            produce_raw(letters, settings.kafka.bootstrap_servers, settings.kafka.topics.dlq,
                        partitioner="round_robin", progress=False)
            yield settings
        finally:
            admin.delete_topics(topics)
    finally:
        admin.close()


def dlq_cli(settings: Settings, *args: str) -> Result:
    topics = settings.kafka.topics
    result = CliRunner().invoke(cli, [*args, "--set", f"kafka.topics.dlq={topics.dlq}",
                                      "--set", f"kafka.topics.events={topics.events}"])
    assert result.exit_code == 0, result.output
    return result


def test_inspect_json_shows_every_dead_letter_with_its_dlq_position(settings: Settings) -> None:
    lines = dlq_cli(settings, "list", "--json").output.splitlines()
    shown = [orjson.loads(line) for line in lines]
    positions = [record.pop("dlq") for record in shown]
    expected = [letter.as_json() for letter in LETTERS]
    assert sorted(shown, key=lambda r: r["rejected_at"]) == expected
    assert {p["topic"] for p in positions} == {settings.kafka.topics.dlq}
    assert sorted((p["partition"], p["offset"]) for p in positions) == [(0, 0), (0, 1), (1, 0)]

    filtered = dlq_cli(settings, "list", "--json", "--reason", "not_utf8").output.splitlines()
    assert [orjson.loads(line)["payload_encoding"] for line in filtered] == ["base64"]
    since = dlq_cli(settings, "list", "--json", "--since", str(REJECTED + 1_000)).output.splitlines()
    assert sorted(orjson.loads(line)["reason"] for line in since) == ["not_utf8", "schema_violation"]
    assert len(dlq_cli(settings, "list", "--json", "--limit", "1").output.splitlines()) == 1

    table = dlq_cli(settings, "list").output
    for reason in ("timestamp_mismatch", "not_utf8", "schema_violation"):
        assert reason in table
    assert "$.ts" in table  # paths are printed as text, not swallowed as rich markup


def test_dry_run_publishes_nothing(settings: Settings) -> None:
    args = [arg for reason in REPLAYED for arg in ("--reason", reason)]
    output = dlq_cli(settings, "replay", *args, "--dry-run").output
    assert "would re-publish 2 record(s)" in output
    assert read_all(settings, settings.kafka.topics.events) == []


def test_replay_republishes_the_original_bytes_and_timestamps(settings: Settings) -> None:
    args = [arg for reason in REPLAYED for arg in ("--reason", reason)]
    output = dlq_cli(settings, "replay", *args).output
    assert f"re-published 2 record(s) to topic '{settings.kafka.topics.events}'" in output

    replayed = read_all(settings, settings.kafka.topics.events)
    assert sorted((r.value, r.timestamp, r.timestamp_type, r.key) for r in replayed) == sorted([
        (ALICE, T + 7, 0, b"alice"),      # 0 = CreateTime: the timestamp is the one we sent
        (NOT_UTF8, T + 60_000, 0, None),  # no parseable user id: no key
    ])


def test_replay_with_a_limit_into_the_dlq_itself(settings: Settings) -> None:
    """``--to`` overrides the events topic; the limit takes the first records in DLQ order (partition,
    offset); and publishing into the topic being read still ends: the read stops at the end offsets
    taken when it started."""
    output = dlq_cli(settings, "replay", "--to", settings.kafka.topics.dlq, "--limit", "2").output
    assert "re-published 2 record(s)" in output
    records = read_all(settings, settings.kafka.topics.dlq)
    replayed = sorted(r.value for r in records if not r.headers)  # plain events: no dead-letter headers
    assert len(records) == 5 and replayed == sorted([ALICE, BAD_TS])  # round robin: p0 = 1st, 3rd
    assert read_all(settings, settings.kafka.topics.events) == []

    # Those plain events are not dead letters: inspecting the DLQ now fails, naming where, instead of skipping them.
    failed = CliRunner().invoke(cli, ["list", "--json", "--set", f"kafka.topics.dlq={settings.kafka.topics.dlq}"])
    assert failed.exit_code == 1
    assert "is not a dead letter: missing header(s) dlq.reason, dlq.topic, dlq.rejected_at" in failed.output


def test_since_accepts_epoch_ms_and_iso_times() -> None:
    assert parse_since("1795461137107") == REJECTED
    assert parse_since("2026-11-23T19:12:17.107Z") == parse_since("2026-11-23T19:12:17.107") == REJECTED
    assert parse_since("2026-11-23T20:12:17.107+01:00") == REJECTED
    with pytest.raises(ValueError, match="epoch milliseconds or an ISO time"):
        parse_since("yesterday")


def test_selection_matches_reason_and_time() -> None:
    records = [DlqRecord.parse(0, i, letter.value, letter.headers().items()) for i, letter in enumerate(LETTERS)]
    assert [r.offset for r in Selection(frozenset({"not_utf8", "schema_violation"})).apply(records)] == [1, 2]
    assert [r.offset for r in Selection(since_ms=REJECTED + 1).apply(records)] == [1, 2]
    assert [r.offset for r in Selection(limit=0).apply(records)] == []
    assert [r.letter.value for r in records] == [ALICE, NOT_UTF8, BAD_TS]
