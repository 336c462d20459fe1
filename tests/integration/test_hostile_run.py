"""A hostile run on the real stack (issue 19, point 8): real events mixed with every class of
input that once stopped the job, and Redis failing under load, in one unbounded job run with no
restart allowed.

Mixed into 3,000 real Taobao events, in phases: records of arbitrary bytes up to the broker's
limit (1,048,000 bytes), JSON events with ids made of characters the contract allows (tag braces,
colons, glob and control characters, 128 emoji), a hot user (20,000 events in one session), a
crawler through 3,000 categories, and bad rules texts on the rules topic (YAML syntax, nesting,
an alias bomb, a 400-digit number). Redis (a private redis-server: the shared one is never
touched) is made a replica (READONLY), then full (OOM), then killed with SIGKILL and restarted,
each while the job has writes to make. Asserted: the job is RUNNING throughout (restart attempts
0: any failure would end it), every dead letter is accounted for by reason, and the ordinary
users' profiles equal a clean run's of the same real events.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
import redis
from pyflink.common import JobStatus

from personalization.pipelines.control import stop_with_savepoint
from personalization.pipelines.main import run_job
from personalization.topics.records import publish_record
from personalization.replay.producer import RawRecord, produce_raw, replay_events, to_record
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import profile_key
from personalization.udfs.validation import EventValidator, Rejection
from tests.support import RedisServer, dead_letters, free_port, isolated_settings, redis_state, start_job, wait_until

ORDINARY = 3_000
PHASES = 3                      # the ordinary events arrive in three phases, one Redis fault each
LARGEST = 1_048_000             # the events topic takes records up to 1,048,588 bytes with their overhead
ODD_IDS = ["{}:*", "segment-changes}:user:a", "a}:profile", "%", "%7B", " ", "\x00\n\t", "\\", "\u202e",
           "日本 🙂", "🙂" * 128, "*?[a-z]"]
HOT, CRAWLER, SENTINEL = "hot-user", "crawler", "sentinel"
BAD_RULES = [
    'version: "broken"\nsegments: [',
    'version: "deep"\nsegments:\n  s: {entry: ' + "(" * 500 + "views_10m" + ")" * 500 + " > 1}\n",
    "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")),
    'version: "huge"\nsegments:\n  s: {entry: views_10m > 1' + "0" * 400 + "}\n",
]


def _garbage(rng: random.Random, count: int, record_ts: int) -> list[RawRecord]:
    """Arbitrary bytes: a few up to the broker's limit, most small; stamped with a time the
    watermark has reached already (they must not move it)."""
    sizes = [LARGEST, 700_000, 65_537] + [rng.randrange(0, 200) for _ in range(count - 3)]
    return [RawRecord(rng.randbytes(size), None, record_ts) for size in sizes]


def _event(user: str, n: int, ts: int, **fields) -> RawRecord:
    event_id = f"{n}-{user}"[:128]
    return RawRecord(orjson.dumps({"schema_version": 1, "event_id": event_id, "event_type": "product_view",
                                   "ts": ts, "user_id": user, **fields}), None, ts)


def _hostile_users(end: int) -> list[RawRecord]:
    """Valid events of the hostile users, within the last 10 minutes before ``end`` (the real
    events' latest time): not late, and the watermark goes no further than the clean run's."""
    start = end - 600_000
    odd = [_event(user, n, start + n) for user in ODD_IDS for n in range(3)]
    hot = [_event(HOT, n, start + n * 600_000 // 20_000, item_id=f"i{n % 500}") for n in range(20_000)]
    crawler = [_event(CRAWLER, n, start + n * 200, category_id=f"c{n}") for n in range(3_000)]
    return odd + hot + crawler


@pytest.fixture(scope="module")
def runs(stack, datasets, tmp_path_factory):
    events = list(replay_events("taobao", augmented=True, seed=8, limit=ORDINARY))
    end = max(e["ts"] for e in events)
    ordinary = [to_record(e) for e in events]
    sentinel = _event(SENTINEL, 0, end)
    single = {"kafka": {"topics": {"partitions": 1}, "bounded": False}, "time": {"idle_timeout": "1h"},
              "flink": {"restart_attempts": 0}}

    clean = isolated_settings(tmp_path_factory.mktemp("clean"), **{**single, "kafka": {"topics": {"partitions": 1}}})
    produce_raw([*ordinary, sentinel], clean.kafka.bootstrap_servers, clean.kafka.topics.events, progress=False)
    run_job(clean)

    tmp = tmp_path_factory.mktemp("hostile")
    server = RedisServer(tmp / "redis").start()
    settings = isolated_settings(tmp, redis={"port": server.port, "retry_backoff_max": 500}, **single)
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    v = settings.validation
    validator = EventValidator(v.schema_path, v.max_event_bytes, v.max_future_skew, v.max_event_age)
    rng, expected, sent = random.Random(19), Counter(), []
    now = int(datetime.now(UTC).timestamp() * 1000)

    def send(records: list[RawRecord]) -> None:
        for record in records:
            checked = validator.validate(record.value, record.timestamp_ms, now)
            if isinstance(checked, Rejection):
                expected[checked.reason.value] += 1
        produce_raw(records, settings.kafka.bootstrap_servers, settings.kafka.topics.events, partitioner=0,
                    progress=False, config={"max_request_size": 2_000_000})
        sent.extend(records)

    def phase(n: int) -> None:
        part = ordinary[n * ORDINARY // PHASES:(n + 1) * ORDINARY // PHASES]
        send(part + _garbage(rng, 40, max(r.timestamp_ms for r in ordinary[:(n + 1) * ORDINARY // PHASES])))

    def refused(error: str) -> int:
        return admin.info("errorstats").get(f"errorstat_{error}", {}).get("count", 0)

    def running() -> bool:
        return client.get_job_status().result() == JobStatus.RUNNING

    phase(0)
    client = start_job(settings)
    try:
        reader = ProfileReader.from_settings(settings)
        wait_until(lambda: any(True for _ in reader.all_profiles()), 180, "the first profiles")
        faults = ((("REPLICAOF", "127.0.0.1", str(free_port())), ("REPLICAOF", "NO", "ONE"), "READONLY"),
                  (("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0"), "OOM"))
        for n, (fault, undo, error) in enumerate(faults, start=1):
            admin.execute_command(*fault)
            phase(n)  # writes to make while Redis refuses them
            wait_until(lambda error=error: refused(error) > 0, 60, f"the job's writes refused with {error}")
            assert running()
            admin.execute_command(*undo)
        for text in BAD_RULES:
            publish_record(settings, settings.kafka.topics.rules, text.encode())
        expected["invalid_rules"] += len(BAD_RULES)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        send(_hostile_users(end))  # read while Redis is gone: the job waits, it does not fail
        wait_until(lambda: client.get_job_status().result() == JobStatus.RUNNING, 5, "the job running")
        server.start()  # same data folder: the AOF brings back what it acknowledged
        admin = redis.Redis(host="127.0.0.1", port=server.port)
        send([sentinel])
        wait_until(lambda: reader.get(SENTINEL), 180, "the sentinel, read after every other record")
        assert running()
        stop_with_savepoint(client, (tmp / "drained").as_uri(), drain=True)
        client.get_job_execution_result().result()  # ended: the operator's last batch is written
        yield {"clean": clean, "hostile": settings, "expected": expected, "events": events, "sent": sent,
               "reader": reader, "dlq": dead_letters(settings)}
    finally:
        server.stop()


def test_every_dead_letter_is_accounted_for_by_reason(runs):
    got = Counter(letter.reason for letter in runs["dlq"])
    assert got == runs["expected"]
    assert {"too_large", "not_utf8", "invalid_rules"} <= set(got)
    largest = max(len(letter.value) for letter in runs["dlq"])
    assert largest == LARGEST  # the largest record tried reached the DLQ whole


def test_ordinary_users_profiles_equal_the_clean_run(runs):
    users = {e["user_id"] for e in runs["events"]}
    clean, hostile = redis_state(runs["clean"]), redis_state(runs["hostile"])
    keys = [profile_key("", user) for user in sorted(users)]
    assert len(keys) > 100 and all(key in clean for key in keys)
    assert {k: hostile.get(k) for k in keys} == {k: clean[k] for k in keys}


def test_hostile_users_are_profiled_within_their_caps(runs):
    reader = runs["reader"]
    profiled = {p["user_id"]: p["events_total"] for p in reader.all_profiles()}
    assert {user: profiled.get(user) for user in ODD_IDS} == dict.fromkeys(ODD_IDS, 3)
    hot, crawler = reader.get(HOT), reader.get(CRAWLER)
    assert hot["events_total"] == 20_000 and crawler["events_total"] == 3_000
    assert len(crawler["top_categories"]) == 5
