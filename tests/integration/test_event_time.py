"""Proofs that profiles and sessions say what happened in event time, whatever the arrival order.

1. order independence: sorted vs. shuffled (bounded displacement) over several partitions;
2. an independent oracle: DuckDB gap sessionization over the same events;
3. lateness: within allowed lateness corrects, beyond it lands in ``events.late``;
4. idleness: a silent partition does not stall event time;
5. restart: stop with a savepoint mid-stream, resume, same end state.
"""

from __future__ import annotations

import duckdb
import pytest

from personalization.core.sessions import session_id
from personalization.pipelines.control import stop_with_savepoint
from personalization.pipelines.main import run_job
from personalization.topics.records import read_topic
from personalization.replay.producer import produce, replay_events
from personalization.replay.shuffle import bounded_shuffle
from personalization.serving.reader import ProfileReader
from tests.support import isolated_settings, redis_state, sessions_of, start_job, wait_until

SLICE = 15_000          # real Taobao events (+ synthetic signals) in the proofs: 6,531 users, 6,757 sessions
OUT_OF_ORDERNESS = 5_000
GAP = 5 * 60_000        # short gap: many sessions per user in a 2 h slice
PROOF_TIME = {"out_of_orderness": OUT_OF_ORDERNESS, "session_gap": GAP,
              "max_session_length": 30 * 86_400_000}  # gap-only sessions, as the oracle computes
T = 1_511_658_000_000
MIN = 60_000


def oracle_sessions(events: list[dict], gap_ms: int) -> dict[str, list[int]]:
    """Events per session, per user, in time order: gap sessionization in SQL, not our code."""
    con = duckdb.connect()
    con.execute("CREATE TABLE events (user_id VARCHAR, event_id VARCHAR, ts BIGINT)")
    con.executemany("INSERT INTO events VALUES (?, ?, ?)",
                    [(e["user_id"], e["event_id"], e["ts"]) for e in events])
    rows = con.execute(f"""
        WITH marked AS (
            SELECT user_id, ts, event_id,
                   CASE WHEN ts - LAG(ts) OVER w >= {gap_ms} THEN 1 ELSE 0 END AS starts_session
            FROM events WINDOW w AS (PARTITION BY user_id ORDER BY ts, event_id)),
        numbered AS (
            SELECT user_id, ts, SUM(starts_session) OVER (
                PARTITION BY user_id ORDER BY ts, event_id ROWS UNBOUNDED PRECEDING) AS session_no
            FROM marked)
        SELECT user_id, session_no, COUNT(*) AS n FROM numbered
        GROUP BY user_id, session_no ORDER BY user_id, session_no""").fetchall()
    out: dict[str, list[int]] = {}
    for user, _, n in rows:
        out.setdefault(user, []).append(n)
    return out


@pytest.fixture(scope="module")
def real_slice(datasets):
    return list(replay_events("taobao", augmented=True, seed=11, limit=SLICE))


@pytest.fixture(scope="module")
def sorted_run(stack, real_slice, tmp_path_factory):
    settings = isolated_settings(tmp_path_factory.mktemp("sorted"), time=PROOF_TIME)
    produce(real_slice, settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    run_job(settings)
    return settings


def test_shuffled_replay_over_partitions_gives_the_same_end_state(sorted_run, real_slice, tmp_path):
    shuffled = bounded_shuffle(real_slice, OUT_OF_ORDERNESS, seed=3)
    moved = sum(1 for a, b in zip(shuffled, real_slice) if a["event_id"] != b["event_id"])
    assert moved > len(real_slice) // 2  # the arrival order really differs
    settings = isolated_settings(tmp_path, time=PROOF_TIME)
    produce(shuffled, settings.kafka.bootstrap_servers, settings.kafka.topics.events,
            partitioner="round_robin", progress=False)
    run_job(settings)

    expected, actual = redis_state(sorted_run), redis_state(settings)
    assert len(expected) > 5_000
    assert actual == expected
    assert sessions_of(settings) == sessions_of(sorted_run)
    assert read_topic(settings, settings.kafka.topics.late) == []


def test_sessions_match_an_independent_duckdb_oracle(sorted_run, real_slice):
    oracle = oracle_sessions(real_slice, GAP)
    flink: dict[str, list[tuple[int, int]]] = {}
    for record in sessions_of(sorted_run):
        assert (record["status"], record["revision"]) == ("closed", 1)
        flink.setdefault(record["user_id"], []).append((record["start"], record["event_count"]))
    assert {user: [n for _, n in sorted(s)] for user, s in flink.items()} == oracle
    assert sum(map(len, oracle.values())) > 5_000


def test_savepoint_stop_and_resume_gives_the_uninterrupted_end_state(sorted_run, real_slice, tmp_path):
    """Unbounded, as in production: stop mid-stream with a savepoint, resume from it, and once
    everything is consumed stop with --drain, which ends event time like the bounded run does."""
    # No source idleness: a drain after the source went idle loses its final watermark
    # (FLINK-40499), which happens here whenever the job lags its reads by more than idle_timeout.
    settings = isolated_settings(tmp_path, events_topic=sorted_run.kafka.topics.events,
                                 time={**PROOF_TIME, "idle_timeout": "1h"}, kafka={"bounded": False})
    reader = ProfileReader.from_settings(settings)
    processed = lambda: sum(p["events_total"] for p in reader.all_profiles())
    client = start_job(settings)
    wait_until(lambda: len(reader.all_profiles()) >= 500, 120, "the first 500 profiles")
    savepoint = stop_with_savepoint(client, (tmp_path / "savepoints").as_uri())
    assert 0 < processed() < len(real_slice)  # really stopped mid-stream

    client = start_job(settings.with_overrides(flink={"savepoint_path": savepoint}))
    wait_until(lambda: processed() == len(real_slice), 300, "every event to be processed")
    stop_with_savepoint(client, (tmp_path / "final").as_uri(), drain=True)
    assert redis_state(settings) == redis_state(sorted_run)
    assert sessions_of(settings) == sessions_of(sorted_run)


def test_late_events_within_lateness_correct_and_beyond_go_to_events_late(stack, tmp_path):
    settings = isolated_settings(
        tmp_path, kafka={"bounded": False, "topics": {"partitions": 1}},
        time={"out_of_orderness": 1_000, "allowed_lateness": 20 * MIN, "session_gap": 5 * MIN})
    on_time = [_view("u1", "u", T + 40 * MIN), _view("u2", "u", T + 41 * MIN), _view("u3", "u", T + 50 * MIN),
               _view("u4", "u", T + 51 * MIN), _view("tick", "clock", T + 61 * MIN)]
    bridging, too_late = _view("u5", "u", T + 45 * MIN + 30_000), _view("u6", "u", T + 35 * MIN)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    client = start_job(settings)
    try:
        produce(on_time, bootstrap, topic, progress=False)
        closed = wait_until(lambda: _sessions_of_user(settings, "u", 2), 90, "u's two sessions to close")
        assert [(s["start"], s["event_count"]) for s in closed] == [(T + 40 * MIN, 2), (T + 50 * MIN, 2)]

        produce([bridging, too_late], bootstrap, topic, progress=False)
        late = wait_until(lambda: read_topic(settings, settings.kafka.topics.late, 500), 60, "the late event")
        changes = wait_until(lambda: _sessions_of_user(settings, "u", 4), 60, "the corrected sessions")
    finally:
        client.cancel().result()

    watermark = T + 61 * MIN - 1_000
    assert [(r["event"]["event_id"], r["lateness_ms"], r["watermark"]) for r in late] == [
        ("u6", watermark - too_late["ts"], watermark)]
    merged, retracted = changes[2:]
    first_id, second_id = session_id("u", T + 40 * MIN), session_id("u", T + 50 * MIN)
    assert (merged["session_id"], merged["status"], merged["revision"]) == (first_id, "updated", 2)
    assert (retracted["session_id"], retracted["status"], retracted["revision"]) == (second_id, "retracted", 2)
    accepted = [e for e in on_time if e["user_id"] == "u"] + [bridging]
    assert [merged["event_count"]] == oracle_sessions(accepted, 5 * MIN)["u"]
    profile = ProfileReader.from_settings(settings).get("u")
    assert profile["events_total"] == 5
    assert (profile["sessions_closed"], profile["last_seen"]) == (1, T + 51 * MIN)


def test_a_silent_partition_does_not_stall_event_time(stack, tmp_path):
    settings = isolated_settings(tmp_path, kafka={"bounded": False, "topics": {"partitions": 2}},
                                 time={"idle_timeout": 1_000})
    events = [_view("e1", "u", T), _view("e2", "u", T + MIN), _view("tick", "clock", T + 40 * MIN)]
    client = start_job(settings)
    try:
        produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events,
                partitioner=0, progress=False)  # partition 1 never receives anything
        sessions = wait_until(lambda: _sessions_of_user(settings, "u", 1), 90,
                              "u's session to close on the watermark of partition 0 alone")
    finally:
        client.cancel().result()
    assert (sessions[0]["start"], sessions[0]["event_count"]) == (T, 2)


def _view(event_id: str, user: str, ts: int) -> dict:
    return {"schema_version": 1, "event_id": event_id, "event_type": "page_view", "ts": ts, "user_id": user}


def _sessions_of_user(settings, user: str, count: int) -> list[dict] | None:
    records = [s for s in read_topic(settings, settings.kafka.topics.sessions, 500) if s["user_id"] == user]
    return records if len(records) >= count else None
