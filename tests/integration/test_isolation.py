"""A failure of one record stays that record's (issue 19, point 3): real job runs with no restart
allowed (an exception anywhere fails the run), each with one user whose step cannot be carried
out. The step goes to the DLQ with its reason, a counter counts it, and every other user is
profiled."""

from __future__ import annotations

import orjson

from personalization.config.settings import DEFAULT_RULES
from personalization.pipelines.main import run_job
from personalization.replay.producer import RawRecord, produce_raw
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect, profile_key
from tests.support import dead_letters, isolated_settings, sessions_of

T = 1_511_658_000_000


def _clicks(users: dict[str, int], event_type: str = "click") -> list[RawRecord]:
    """``users``: user -> number of events, one a second."""
    return [RawRecord(orjson.dumps({"schema_version": 1, "event_id": f"{user}-{i}", "event_type": event_type,
                                    "ts": T + i * 1_000, "user_id": user}), user.encode(), T + i * 1_000)
            for user, n in users.items() for i in range(n)]


def _power(name: str, levels: int) -> str:
    """``name`` multiplied by itself 2**levels times, as a balanced tree (within the loader's depth)."""
    return name if levels == 0 else f"({_power(name, levels - 1)} * {_power(name, levels - 1)})"


def test_a_step_the_rules_cannot_evaluate_goes_to_the_dlq_and_the_job_goes_on(stack, tmp_path):
    """Rules that pass every load-time check but overflow for some users: views_7d to the power
    2,048 is an int no float holds for a user with two views, and dividing it raises
    OverflowError. A user with one view (1 to that power) is evaluated as usual."""
    rules = DEFAULT_RULES.read_text().replace(
        "entry: purchases_30d > 3", f"entry: {_power('views_7d', 11)} / 3 > 1_000", 1)
    assert rules.count("* views_7d") == 1_024
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules)
    settings = isolated_settings(tmp_path, rules={"path": str(rules_file)}, flink={"restart_attempts": 0})
    produce_raw(_clicks({"heavy": 2, "calm": 1, "quiet": 1}, "page_view"), settings.kafka.bootstrap_servers,
                settings.kafka.topics.events, partitioner=0, progress=False)
    run_job(settings)

    failed = [letter for letter in dead_letters(settings) if letter.reason == "processing_error"]
    assert failed and all(letter.detail.startswith("OverflowError") for letter in failed)
    assert {orjson.loads(letter.value)["user_id"] for letter in failed} == {"heavy"}
    reader = ProfileReader.from_settings(settings)
    assert {user: reader.get(user)["events_total"] for user in ("heavy", "calm", "quiet")} == {
        "heavy": 2, "calm": 1, "quiet": 1}   # counted on arrival; only the rules step failed


def test_a_write_redis_refuses_goes_to_the_dlq_and_the_job_goes_on(stack, tmp_path):
    """Something else holds a string under one user's profile key: that user's profile write gets
    WRONGTYPE. It is dead-lettered (reason redis_write_refused, with the profile), counted, and the
    other users are written; no restart is allowed, so an exception anywhere fails the run."""
    # Written through (no batch held back): a batch still held when a bounded input ends is
    # sent as the operator closes, when a refusal can no longer be emitted (only logged).
    settings = isolated_settings(tmp_path, flink={"restart_attempts": 0}, redis={"batch_delay": 0})
    prefix = settings.redis.key_prefix
    client = connect(settings.redis)
    client.set(profile_key(prefix, "squatted"), "not a hash")
    produce_raw(_clicks({"squatted": 2, "ann": 2, "ben": 2}), settings.kafka.bootstrap_servers, settings.kafka.topics.events, partitioner=0,
                progress=False)
    run_job(settings)

    refused = [letter for letter in dead_letters(settings) if letter.reason == "redis_write_refused"]
    assert refused and all("WRONGTYPE" in letter.detail and letter.topic == "redis" for letter in refused)
    assert {orjson.loads(letter.value)["profile"]["user_id"] for letter in refused} == {"squatted"}
    assert client.get(profile_key(prefix, "squatted")) == b"not a hash"
    reader = ProfileReader.from_settings(settings)
    assert [reader.get(user)["events_total"] for user in ("ann", "ben")] == [2, 2]


def test_outputs_too_large_for_redis_or_kafka_go_to_the_dlq_and_the_job_goes_on(stack, tmp_path):
    """A crawler views 60 products of 60 categories with 128-character ids in one session: its
    profile (about 1.5 KB) is above ``redis.max_value_bytes`` and its session record (about
    16 KB) above what a Kafka output takes with ``kafka.max_message_bytes`` at 4 KiB. Both go to
    the DLQ as ``output_too_large``, summarized (size and ids, not the record); the other users'
    profiles and sessions are written; no restart is allowed."""
    settings = isolated_settings(tmp_path, flink={"restart_attempts": 0}, kafka={"max_message_bytes": 4096},
                                 redis={"batch_delay": 0, "max_value_bytes": 1024})
    crawler = [RawRecord(orjson.dumps({"schema_version": 1, "event_id": f"crawler-{i}", "event_type": "product_view",
                                       "ts": T + i * 1_000, "user_id": "crawler", "item_id": f"{i:03d}" + "i" * 125,
                                       "category_id": f"{i:03d}" + "c" * 125}), b"crawler", T + i * 1_000)
               for i in range(60)]
    produce_raw(crawler + _clicks({"ann": 2, "ben": 2}), settings.kafka.bootstrap_servers,
                settings.kafka.topics.events, partitioner=0, progress=False)
    run_job(settings)

    letters = [letter for letter in dead_letters(settings) if letter.reason == "output_too_large"]
    profiles = [orjson.loads(letter.value) for letter in letters if letter.topic == "redis"]
    assert profiles and {p["user_id"] for p in profiles} == {"crawler"}
    assert all(p["bytes"] > 1024 and "redis.max_value_bytes (1024)" in letter.detail
               for p, letter in zip(profiles, (x for x in letters if x.topic == "redis")))
    assert "top_categories" in profiles[-1]["largest_fields"]
    sessions = [orjson.loads(letter.value) for letter in letters if letter.topic == settings.kafka.topics.sessions]
    assert sessions and all(s["bytes"] > 4096 - 1024 and '"user_id":"crawler"' in s["head"] for s in sessions)
    assert len(letters) == len(profiles) + len(sessions)  # nothing else was too large
    reader = ProfileReader.from_settings(settings)
    assert reader.get("crawler") is None or reader.get("crawler")["events_total"] < 60  # written while it fitted
    assert [reader.get(user)["events_total"] for user in ("ann", "ben")] == [2, 2]
    assert {s["user_id"] for s in sessions_of(settings)} == {"ann", "ben"}
