"""End to end on the real stack: a known stream through Kafka, the job on the MiniCluster, Redis.

One job run serves all assertions of this module (a job run costs ~15 s on 2 cores).
"""

from __future__ import annotations

import subprocess

import orjson
import pytest

from personalization.config.settings import REPO_ROOT
from personalization.core.sessions import session_id
from personalization.pipelines.main import run_job
from personalization.topics.records import read_topic
from personalization.replay.producer import RawRecord, produce, produce_raw
from personalization.serving.reader import ProfileReader
from tests.support import PZ, dead_letters, isolated_settings

T = 1_511_658_000_000  # 2017-11-26 01:00:00 UTC
MIN = 60_000


def ev(event_id: str, user: str, event_type: str, ts: int, **fields) -> dict:
    return {"schema_version": 1, "event_id": event_id, "event_type": event_type, "ts": ts,
            "user_id": user, **fields}


STREAM = [
    ev("a1", "alice", "page_view", T, dwell_ms=2_000),
    ev("b1", "bob", "product_view", T + 10_000, item_id="i3", category_id="c1"),
    ev("b2", "bob", "product_view", T + 20_000, item_id="i3", category_id="c1"),
    ev("a2", "alice", "product_view", T + 1 * MIN, item_id="i1", category_id="c1", dwell_ms=5_000),
    ev("a2", "alice", "product_view", T + 1 * MIN, item_id="i1", category_id="c1", dwell_ms=5_000),
    ev("a3", "alice", "scroll", T + 90_000, scroll_depth=0.8),
    ev("a4", "alice", "add_to_cart", T + 2 * MIN, item_id="i1", category_id="c1"),
    ev("a5", "alice", "purchase", T + 3 * MIN, item_id="i1", category_id="c1"),
    ev("a6", "alice", "product_view", T + 40 * MIN, item_id="i2", category_id="c2"),
]

HOSTILE = {
    "not_json": b'{"schema_version": 1, "event_id": ',
    "missing_identity": orjson.dumps({"schema_version": 1, "event_id": "h2", "event_type": "click", "ts": T}),
    "schema_violation": orjson.dumps({"schema_version": 1, "event_id": "h3", "event_type": "click",
                                      "ts": str(T), "user_id": "mallory"}),
    "unknown_event_type": orjson.dumps({"schema_version": 1, "event_id": "h4", "event_type": "teleport",
                                        "ts": T, "user_id": "mallory"}),
    "too_large": orjson.dumps(ev("h5", "mallory", "page_view", T, page="x" * 70_000)),
}


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory):
    settings = isolated_settings(tmp_path_factory.mktemp("pipeline"))
    topic = settings.kafka.topics.events
    bootstrap = settings.kafka.bootstrap_servers
    # One partition keeps the arrival order exactly as written (the other partitions stay empty).
    produce(STREAM[:4], bootstrap, topic, partitioner=0, progress=False)
    produce_raw([RawRecord(value, None, T) for value in HOSTILE.values()], bootstrap, topic,
                partitioner=0, progress=False)
    produce(STREAM[4:], bootstrap, topic, partitioner=0, progress=False)
    run_job(settings)
    topics = settings.kafka.topics
    return {
        "settings": settings,
        "profiles": {p["user_id"]: p for p in ProfileReader.from_settings(settings).all_profiles()},
        "sessions": read_topic(settings, topics.sessions),
        "dlq": dead_letters(settings),
        "late": read_topic(settings, topics.late),
    }


def test_profiles_hold_exact_counters(run):
    alice = run["profiles"]["alice"]
    assert alice["counts"] == {"add_to_cart": 1, "page_view": 1, "product_view": 2, "purchase": 1, "scroll": 1}
    assert alice["events_total"] == 6  # the duplicate of a2 is not counted
    assert (alice["first_seen"], alice["last_seen"]) == (T, T + 40 * MIN)
    assert alice["dwell_ms_total"] == 7_000
    assert alice["max_scroll_depth"] == 0.8
    assert alice["top_categories"] == [{"category_id": "c1", "events": 3}, {"category_id": "c2", "events": 1}]
    assert (alice["sessions_closed"], alice["sessions_converted"]) == (2, 1)
    assert alice["windows"]["10m"] == {"product_view": 1}
    assert alice["windows"]["1h"] == alice["counts"]
    # 6 applied events + 2 session emissions + 4 rules steps that changed segments or scores
    # (page_view: enters casual_browser; add_to_cart, purchase: engagement; the last event: decay)
    assert alice["version"] == 12
    assert alice["segments"] == {"casual_browser": T}
    assert alice["primary_segment"] == "casual_browser"
    week = 7 * 24 * 60 * MIN  # engagement: add_to_cart (3) at +2 min, purchase (10) at +3 min, read at +40 min
    assert alice["scores"] == {"engagement": round(3 * 0.5 ** (38 * MIN / week) + 10 * 0.5 ** (37 * MIN / week), 6)}

    bob = run["profiles"]["bob"]
    assert bob["counts"] == {"product_view": 2}
    assert (bob["sessions_closed"], bob["sessions_converted"]) == (1, 0)
    assert bob["version"] == 4  # 2 applied events + 1 session emission + entering casual_browser
    assert set(run["profiles"]) == {"alice", "bob"}  # nothing of the hostile records reached Redis


def test_sessions_topic_has_each_closed_session_once(run):
    by_id = {s["session_id"]: s for s in run["sessions"]}
    assert len(run["sessions"]) == 3 == len(by_id)
    first = by_id[session_id("alice", T)]
    assert {k: first[k] for k in ("status", "revision", "start", "end", "duration_ms", "event_count",
                                  "counts", "max_scroll_depth", "dwell_ms", "items", "categories",
                                  "converted")} == {
        "status": "closed", "revision": 1, "start": T, "end": T + 3 * MIN, "duration_ms": 3 * MIN,
        "event_count": 5,
        "counts": {"add_to_cart": 1, "page_view": 1, "product_view": 1, "purchase": 1, "scroll": 1},
        "max_scroll_depth": 0.8, "dwell_ms": 7_000, "items": ["i1"], "categories": ["c1"], "converted": True,
    }
    second = by_id[session_id("alice", T + 40 * MIN)]
    assert (second["event_count"], second["items"], second["converted"]) == (1, ["i2"], False)
    assert by_id[session_id("bob", T + 10_000)]["event_count"] == 2


def test_every_hostile_record_is_in_the_dlq_with_its_reason(run):
    dlq = run["dlq"]
    assert sorted(letter.reason for letter in dlq) == sorted(HOSTILE)
    topic = run["settings"].kafka.topics.events
    for letter in dlq:
        assert letter.value == HOSTILE[letter.reason]
        assert letter.topic == topic
        assert letter.partition == 0
        assert 4 <= letter.offset <= 8  # written after the first four valid events
    assert next(letter for letter in dlq if letter.reason == "schema_violation").path == "$.ts"
    assert run["late"] == []


def test_bad_config_stops_before_the_job_starts():
    result = subprocess.run(
        [*PZ, "run", "--set", "time.session_gap=soon",
         "--set", "kafka.no_such_key=1"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "time.session_gap: expected a duration like 500ms, 5s, 30m, 1h or 7d (got 'soon')" in result.stderr
    assert "kafka.no_such_key: unknown key" in result.stderr
    assert "Flink" not in result.stderr and "Traceback" not in result.stderr
