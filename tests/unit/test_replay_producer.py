"""Producer pieces that need no broker: record mapping, pacing, stream assembly and the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka.errors import KafkaError

from personalization.replay.producer import (
    MIN_SLEEP_S,
    RawRecord,
    main,
    in_user_sample,
    pacing_delay,
    produce,
    replay_events,
    to_record,
    write_jsonl,
)
from personalization.replay.synthetic import DAY_MS

EVENT = {"schema_version": 1, "event_id": "e1", "event_type": "click", "ts": 1_700_000_000_123, "user_id": "u-1"}


def test_record_is_keyed_by_user_and_stamped_with_event_time() -> None:
    record = to_record(EVENT)
    assert record == RawRecord(value=orjson.dumps(EVENT), key=b"u-1", timestamp_ms=1_700_000_000_123)
    assert orjson.loads(record.value) == EVENT


def test_anonymous_events_are_keyed_by_anonymous_id() -> None:
    event = {**EVENT, "anonymous_id": "a-9"}
    del event["user_id"]
    assert to_record(event).key == b"a-9"


def test_events_with_both_ids_are_keyed_by_anonymous_id_so_a_device_stays_in_order() -> None:
    assert to_record({**EVENT, "anonymous_id": "a-9"}).key == b"a-9"


def test_pacing_delay_follows_absolute_deadlines() -> None:
    assert pacing_delay(1000, 0.0, None) == 0.0
    assert pacing_delay(0, 0.0, 10) == 0.0
    assert pacing_delay(5, 0.1, 10) == pytest.approx(0.4)
    assert pacing_delay(5, 0.9, 10) == 0.0  # behind schedule: catch up, never wait
    assert pacing_delay(1, 0.0, 1000) == 0.0  # 1 ms ahead is below the sleep quantum


def test_pacing_holds_a_fast_rate_with_one_sleep_per_batch() -> None:
    rate, records, send_cost_s = 50_000, 100_000, 2e-6
    clock, sleeps = 0.0, 0
    for index in range(records):
        delay = pacing_delay(index, clock, rate)
        if delay:
            clock += delay
            sleeps += 1
        clock += send_cost_s
    assert clock == pytest.approx(records / rate, rel=0.01)
    assert sleeps <= records / rate / MIN_SLEEP_S + 1


def test_replay_events_applies_limit_then_bounded_shuffle() -> None:
    events = list(replay_events("synthetic", users=100, duration_ms=DAY_MS // 4, seed=2, limit=200, shuffle_ms=5000))
    sorted_prefix = list(replay_events("synthetic", users=100, duration_ms=DAY_MS // 4, seed=2, limit=200))

    assert len(events) == 200
    assert sorted(events, key=lambda e: e["event_id"]) == sorted(sorted_prefix, key=lambda e: e["event_id"])
    assert events != sorted_prefix


def test_replay_events_refuses_to_augment_synthetic_events() -> None:
    with pytest.raises(ValueError, match="augment and user_share apply to real datasets"):
        replay_events("synthetic", augmented=True)
    with pytest.raises(ValueError, match="augment and user_share apply to real datasets"):
        replay_events("synthetic", user_share=0.5)


def test_any_id_has_a_place_in_or_out_of_the_user_sample() -> None:
    """An id full of key syntax, a megabyte long or not valid UTF-8 is hashed like any other."""
    for user in ("{}:*", "{" * 1_000_000, "\udcff-surrogate", ""):
        assert in_user_sample(user, 1.0)
        assert in_user_sample(user, 0.5) in (True, False)


def test_a_user_share_keeps_whole_histories_of_about_that_share_of_the_users(datasets) -> None:
    """The demo's sample: each kept user has every event (and signal) of the full replay up to the
    same time, and the others none."""
    full = list(replay_events("all", augmented=True, seed=7, limit=20_000))
    until = full[-1]["ts"]
    sample = [e for e in replay_events("all", augmented=True, seed=7, user_share=0.4) if e["ts"] <= until]
    kept = {e["user_id"] for e in sample}
    users = {e["user_id"] for e in full}
    assert 0.35 < len(kept) / len(users) < 0.45
    assert sorted(map(orjson.dumps, sample)) == sorted(orjson.dumps(e) for e in full if e["user_id"] in kept)
    assert all(in_user_sample(user, 0.4) == (user in kept) for user in users)


def test_write_jsonl_writes_one_compact_json_object_per_line() -> None:
    out = io.BytesIO()
    summary = write_jsonl([EVENT, {**EVENT, "event_id": "e2"}], out, progress=False)
    assert out.getvalue() == orjson.dumps(EVENT) + b"\n" + orjson.dumps({**EVENT, "event_id": "e2"}) + b"\n"
    assert summary.sent == 2


def test_cli_writes_the_same_stream_as_the_library(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    args = ["--dataset", "synthetic", "--users", "20", "--days", "0.5", "--seed", "3", "--limit", "100"]

    result = CliRunner().invoke(main, [*args, "--shuffle-ms", "1000", "--output", str(out), "--no-progress"])

    assert result.exit_code == 0, result.output
    expected = replay_events("synthetic", users=20, duration_ms=DAY_MS // 2, seed=3, limit=100, shuffle_ms=1000)
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == list(expected)
    assert "sent 100 events to" in result.stderr


def test_cli_reports_missing_real_datasets_as_a_usage_error(tmp_path: Path) -> None:
    args = ["--dataset", "taobao", "--datasets-dir", str(tmp_path), "--output", str(tmp_path / "x"), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "UserBehavior.csv" in result.output


def test_cli_auto_falls_back_to_synthetic_when_datasets_are_missing(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    args = ["--datasets-dir", str(tmp_path), "--users", "5", "--limit", "10", "--output", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "replaying the synthetic stream" in result.stderr
    assert {orjson.loads(line)["source"] for line in out.read_bytes().splitlines()} == {"synthetic"}


def test_cli_rejects_an_unknown_partitioner() -> None:
    result = CliRunner().invoke(main, ["--partitioner", "sticky", "--output", "-"])
    assert result.exit_code == 2
    assert "expected key, round_robin or a partition number" in result.output


def test_an_unreachable_broker_raises_instead_of_losing_events() -> None:
    config = {"max_block_ms": 1000, "bootstrap_timeout_ms": 1000}
    with pytest.raises(KafkaError):
        produce([EVENT], "127.0.0.1:1", "events", progress=False, config=config)
