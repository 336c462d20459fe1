"""Hostile input on the real stack: over 10,000 malformed records of every rejection reason,
plus re-sent duplicates, mixed into a real replay (Taobao + JD with synthetic signals).

One mixed job run, compared with the clean run of the same valid events (``real_replay`` in
conftest.py): the job stays up (no restarts allowed), every hostile record is in the DLQ with
the right reason, and the Redis end state, sessions, segment changes and late events equal the
clean run's. The clean run also shows the enrichment: devices from the user agents, and the
categories of Taobao events (sent without them) from the item catalog.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from personalization.pipelines.main import run_job
from personalization.topics.records import read_topic
from personalization.replay.producer import RawRecord, produce_raw, to_record
from personalization.serving.redis_store import profile_key
from personalization.udfs.enrichment import enrich
from tests.support import dead_letters, isolated_settings, redis_state, sessions_of

HOSTILE_PER_VALID = 3          # about 12,000 hostile records for the 4,000 valid events
DUPLICATE_EVERY = 10           # every 10th valid event is sent again later
DUPLICATE_DELAY = 50           # ... this many valid events later
MAX_BYTES = 65_536


def _hostile(rng: random.Random, anchor: dict, now: int, oldest: int) -> tuple[str, bytes | None, int]:
    """One hostile record after the valid event ``anchor``: (expected reason, value, record ts).

    Record timestamps are the anchor's (so they never move the watermark beyond what the valid
    events do), except where the timestamp is the point: future and too-old records carry their
    own.
    """
    ts, user = anchor["ts"], anchor.get("user_id", "u")
    base = {"schema_version": 1, "event_id": f"h-{rng.getrandbits(48):x}", "event_type": "click",
            "ts": ts, "user_id": user}  # the identity of a real user: nothing may reach that profile
    reason = rng.choice(["not_json", "not_utf8", "too_large", "schema_violation", "unknown_event_type",
                         "ts_in_future", "ts_too_old", "missing_identity", "timestamp_mismatch"])
    if reason == "too_large" and rng.random() < 0.8:  # keep the topic small: most become another kind
        reason = "not_json"
    dumps = orjson.dumps
    if reason == "not_json":
        value = rng.choice([
            dumps(base)[: rng.randrange(1, 40)],
            b"}" + bytes(rng.choice(b"{}[],:\"abc 0123") for _ in range(rng.randrange(0, 60))),
            b"", None,  # an empty record and a tombstone
            b"{'single': 'quotes'}", b"NaN", b"[1, 2,]",
        ])
    elif reason == "not_utf8":
        value = rng.choice([
            b"\xff\xfe" + dumps(base),
            dumps({**base, "page": "/x"}).replace(b"/x", "/jörg".encode("latin-1")),
            b"\xff" + bytes(rng.randrange(128, 256) for _ in range(rng.randrange(0, 30))),
            b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate
        ])
    elif reason == "too_large":
        value = dumps({**base, "page": "x" * (MAX_BYTES + rng.randrange(1, 5_000))})
    elif reason == "schema_violation":
        value = dumps(rng.choice([
            {**base, "ts": str(ts)}, {**base, "schema_version": 2}, {**base, "campaign": "spam"},
            {**base, "scroll_depth": 1.5}, {**base, "event_id": ""}, {**base, "dwell_ms": -1},
            {**base, "user_id": 42}, {**base, "event_type": 7}, [base], 17, "event",
            {k: v for k, v in base.items() if k != "event_id"},
        ]))
    elif reason == "unknown_event_type":
        value = dumps({**base, "event_type": rng.choice(["teleport", "PageView", "", "purchase "])})
    elif reason == "ts_in_future":
        # Beyond the 5 min skew and stamped so, as the contract asks of producers: the source must
        # not let it move the watermark. The broker refuses record timestamps over 1 h ahead
        # (log.message.timestamp.after.max.ms), so that is as far as a producer can go.
        future = now + rng.randrange(6 * 60_000, 50 * 60_000)
        return reason, dumps({**base, "ts": future}), future
    elif reason == "ts_too_old":
        old = rng.randrange(0, oldest - 86_400_000)
        return reason, dumps({**base, "ts": old}), old
    elif reason == "missing_identity":
        identity = rng.choice([{}, {"user_id": None}, {"user_id": ""}, {"anonymous_id": ""},
                               {"user_id": None, "anonymous_id": None}])
        value = dumps({**{k: v for k, v in base.items() if k != "user_id"}, **identity})
    else:  # timestamp_mismatch: a valid event whose Kafka timestamp is not its ts
        value = dumps({**base, "ts": ts - rng.randrange(1, 60_000)})
    return reason, value, ts


def _mixed_records(events: list[dict], now: int, oldest: int):
    rng = random.Random(20_171_126)
    records, expected, duplicates, pending = [], Counter(), 0, []
    for index, event in enumerate(events):
        records.append(to_record(event))
        if index % DUPLICATE_EVERY == 0:
            pending.append((index + DUPLICATE_DELAY, event))
        while pending and pending[0][0] <= index:
            records.append(to_record(pending.pop(0)[1]))  # the same bytes and record timestamp again
            duplicates += 1
        for _ in range(HOSTILE_PER_VALID):
            reason, value, record_ts = _hostile(rng, event, now, oldest)
            records.append(RawRecord(value, b"tombstone" if value is None else None, record_ts))
            expected[(reason, value or b"")] += 1
    for _, event in pending:
        records.append(to_record(event))
        duplicates += 1
    return records, expected, duplicates


@pytest.fixture(scope="module")
def mixed(real_replay, tmp_path_factory):
    clean = real_replay
    settings = isolated_settings(tmp_path_factory.mktemp("hostile"), **clean["overrides"])
    now = int(datetime.now(UTC).timestamp() * 1000)
    oldest = now - clean["overrides"]["validation"]["max_event_age"]
    records, expected, duplicates = _mixed_records(clean["events"], now, oldest)
    produce_raw(records, settings.kafka.bootstrap_servers, settings.kafka.topics.events, partitioner=0,
                progress=False)
    run_job(settings)  # restart_attempts 0: an exception anywhere fails this call
    topics = settings.kafka.topics
    return {
        "settings": settings, "expected": expected, "duplicates": duplicates,
        "redis": redis_state(settings), "sessions": sessions_of(settings),
        "late": read_topic(settings, topics.late), "dlq": dead_letters(settings),
        "segment_changes": sorted(read_topic(settings, topics.segment_changes),
                                  key=lambda r: (r["user_id"], r["seq"])),
    }


def test_every_hostile_record_is_in_the_dlq_with_its_reason(real_replay, mixed):
    expected = mixed["expected"]
    assert sum(expected.values()) >= 10_000
    reasons = Counter(reason for reason, _ in expected.elements())
    assert set(reasons) == {"not_json", "not_utf8", "too_large", "schema_violation", "unknown_event_type",
                            "ts_in_future", "ts_too_old", "missing_identity", "timestamp_mismatch"}
    got = Counter()
    for letter in mixed["dlq"]:
        got[(letter.reason, letter.value)] += 1
        assert letter.topic == mixed["settings"].kafka.topics.events
    assert got == expected
    future = [letter for letter in mixed["dlq"] if letter.reason == "ts_in_future"]
    assert all(letter.timestamp > letter.rejected_at for letter in future)  # their real record timestamps
    assert real_replay["dlq"] == []


def test_valid_events_end_state_equals_the_clean_run(real_replay, mixed):
    assert mixed["redis"] == real_replay["redis"]
    assert mixed["sessions"] == real_replay["sessions"]
    assert mixed["segment_changes"] == real_replay["segment_changes"]
    assert mixed["late"] == real_replay["late"] == []  # future-stamped records did not move the watermark
    profiles = [k for k in real_replay["redis"] if k.endswith(":profile")]
    assert len(profiles) > 1_000


def test_duplicates_injected_into_the_replay_leave_the_end_state_unchanged(real_replay, mixed):
    """The mixed run re-sent every 10th valid event 50 events later (same bytes, same record
    timestamp): none is in the DLQ or the late topic, and every profile's counters and version
    are those of the clean run, so each was counted as a duplicate and not applied."""
    events = real_replay["events"]
    assert mixed["duplicates"] == len(events[::DUPLICATE_EVERY]) == 400
    assert len(mixed["dlq"]) == sum(mixed["expected"].values())  # the DLQ holds the hostile records only
    assert mixed["late"] == []
    for user in {e["user_id"] for e in events[::DUPLICATE_EVERY]}:
        key = profile_key("", user)  # keys relative to each run's prefix
        assert mixed["redis"][key] == real_replay["redis"][key], user


def test_enrichment_is_visible_in_the_profiles(real_replay):
    """Devices from the user agents, and the catalog's categories for Taobao events sent without."""
    originals, state = real_replay["originals"], real_replay["redis"]
    assert any("category_id" not in e for e in real_replay["events"] if e.get("source") == "taobao")
    devices: dict[str, Counter] = {}
    categories: dict[str, Counter] = {}
    for event in originals:
        user = event["user_id"]
        if event.get("user_agent"):
            devices.setdefault(user, Counter())[enrich(event["user_agent"]).device_class.value] += 1
        if event.get("category_id"):
            categories.setdefault(user, Counter())[event["category_id"]] += 1
    assert len(devices) > 1_000
    for user in devices:
        profile = {k.decode(): orjson.loads(v) for k, v in state[profile_key("", user)].items()}
        assert profile["devices"] == dict(sorted(devices[user].items())), user
        assert sum(profile["browsers"].values()) == sum(devices[user].values())
        assert profile["last_device"]["device_class"] in profile["devices"]
        top = sorted(categories.get(user, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        assert profile["top_categories"] == [{"category_id": c, "events": n} for c, n in top], user
