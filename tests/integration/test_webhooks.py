"""The activation service against a real local HTTP receiver (bench/webhook_receiver.py) and the
real local Kafka: routing, signatures (docs/webhooks.md's verification snippet), retries, timeouts, a
receiver that is down, the DLQ, replay, and a SIGKILL mid-stream with nothing lost."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from bench.webhook_receiver import Receiver
from personalization.activation.service import group_id, run
from personalization.activation.signing import change_id
from personalization.config.settings import REPO_ROOT, Settings
from personalization.topics.records import read_topic
from personalization.replay.producer import RawRecord, produce_raw
from tests.support import PZ, free_port, isolated_settings, read_all, replayed_run, wait_until, write_config

SECRET = "s3cret-for-tests"
FAST = {"retries": 2, "backoff_initial": "10ms", "backoff_max": "50ms", "timeout": "2s"}


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def secret(monkeypatch) -> bytes:
    monkeypatch.setenv("PZ_WEBHOOK_SECRET", SECRET)
    return SECRET.encode()


def readme_verify():
    """The verification snippet of docs/webhooks.md, executed as written."""
    text = (REPO_ROOT / "docs" / "webhooks.md").read_text()
    section = text[text.index("# Webhooks (activation service)"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "docs/webhooks.md", "exec"), scope)
    return scope["verify"]


def settings_with(tmp_path: Path, *endpoints: dict, batch_size: int = 500) -> Settings:
    return isolated_settings(tmp_path, activation={"endpoints": list(endpoints), "batch_size": batch_size})


def change(user: str, segment: str, seq: int, action: str = "enter") -> dict:
    return {"user_id": user, "segment": segment, "action": action,
            "cause": {"rule": f"{segment}.entry", "features": {"n": seq}},
            "event_time": 1_511_658_060_000 + seq, "rules_version": "t-1", "seq": seq}


def publish(settings: Settings, values: list[bytes]) -> None:
    """The values onto the segment-changes topic, every one acknowledged."""
    produce_raw([RawRecord(value) for value in values], settings.kafka.bootstrap_servers,
                settings.kafka.topics.segment_changes, progress=False)


def dlq(settings: Settings) -> list[dict]:
    """The webhook DLQ read to its end offsets (once the broker reports its partitions: a topic
    just created can briefly have none in a new client's metadata)."""
    topic = settings.kafka.topics.webhooks_dlq
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        wait_until(lambda: consumer.partitions_for_topic(topic), 30, f"partitions of {topic}")
    finally:
        consumer.close()
    return [orjson.loads(r.value) for r in read_all(settings, topic)]


def committed_to_end(settings: Settings, group: str) -> bool:
    """The group's committed offsets equal the topic's end offsets on every partition."""
    topic = settings.kafka.topics.segment_changes
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=group,
                             enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)
        return all((consumer.committed(tp) or 0) == ends[tp] for tp in partitions)
    finally:
        consumer.close()


class InProcess:
    """The service's loop in a thread of the test (the SIGKILL test runs it as a process)."""

    def __init__(self, settings: Settings) -> None:
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self._thread.start()

    def _run(self, settings: Settings) -> None:
        try:
            self.stats = run(settings, stop=self._stop.is_set)
        except BaseException as err:  # surfaced by stop()
            self.error = err

    def stop(self):
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "service did not stop"
        if self.error:
            raise self.error
        return self.stats


def test_each_change_is_delivered_signed_or_dead_lettered_with_its_reason(stack, tmp_path, receiver, secret):
    down = f"http://127.0.0.1:{free_port()}/hook"
    settings = settings_with(
        tmp_path,
        {"name": "ok", "url": receiver.url + "/ok", "segments": ["a"], "actions": ["enter"], "concurrency": 3, **FAST},
        {"name": "fail", "url": receiver.url + "/fail", "segments": ["b"], **FAST},
        {"name": "slow", "url": receiver.url + "/slow", "segments": ["c"], **FAST, "retries": 1, "timeout": "300ms"},
        {"name": "down", "url": down, "segments": ["d"], **FAST},
        {"name": "flaky", "url": receiver.url + "/flaky", "segments": ["e"], **FAST},
        {"name": "all", "url": receiver.url + "/all", "segments": ["*"], "actions": ["exit"], **FAST},
    )
    hostile_user = "{}:*/ü\n" + "x" * 200
    changes = ([change(f"u{i}", "a", i) for i in range(40)] + [change(hostile_user, "a", 1)]
               + [change("u1", "a", 100, "exit")]  # exits of a: only the "all" endpoint (404 there)
               + [change(f"b{i}", "b", 1) for i in range(3)] + [change(f"c{i}", "c", 1) for i in range(2)]
               + [change(f"d{i}", "d", 1) for i in range(3)] + [change(f"e{i}", "e", 1) for i in range(3)])
    garbage = os.urandom(1_000_000)
    publish(settings, [orjson.dumps(c) for c in changes] + [garbage, b'{"user_id": 7}'])

    service = InProcess(settings)
    try:
        expected_ok = {change_id(c["user_id"], c["seq"]) for c in changes if c["segment"] == "a" and c["action"] == "enter"}
        wait_until(lambda: receiver.delivered("/ok") == expected_ok, 60, "the deliveries to /ok")
        wait_until(lambda: receiver.delivered("/flaky") == {change_id(f"e{i}", 1) for i in range(3)}, 60, "flaky")
        # 3 fail + 2 slow + 3 down + 1 exit answered 404 + 2 invalid records
        wait_until(lambda: len(dlq(settings)) >= 11, 60, "the dead letters")
        wait_until(lambda: committed_to_end(settings, group_id(settings)), 30, "the offset commit")
    finally:
        stats = service.stop()
    assert stats.records == len(changes) + 2

    verify = readme_verify()
    oks = [r for r in receiver.requests if r.path == "/ok"]
    for request in oks:
        assert verify(secret, request.headers["x-pz-timestamp"], request.headers["x-pz-signature"], request.body)
        assert not verify(b"wrong", request.headers["x-pz-timestamp"], request.headers["x-pz-signature"], request.body)
        body = json.loads(request.body)
        assert body["id"] == request.headers["idempotency-key"] == change_id(body["change"]["user_id"], body["change"]["seq"])
    hostile = [json.loads(r.body)["change"] for r in oks if json.loads(r.body)["change"]["user_id"] == hostile_user]
    assert hostile == [change(hostile_user, "a", 1)]
    assert receiver.max_in_flight["/ok"] <= 3
    assert receiver.count("/fail") == 3 * 3 and receiver.count("/flaky") == 6  # the faults happened, retried

    letters = dlq(settings)
    assert len(letters) == 11
    by = {}
    for letter in letters:
        by.setdefault(letter["endpoint"], []).append(letter)
    assert sorted(letter["id"] for letter in by["fail"]) == [change_id(f"b{i}", 1) for i in range(3)]
    assert all(letter["reason"].startswith("HTTP 500") and letter["attempts"] == 3 for letter in by["fail"])
    assert all(letter["reason"].startswith("timeout") and letter["attempts"] == 2 for letter in by["slow"]) and len(by["slow"]) == 2
    assert all("ConnectError" in letter["reason"] and letter["attempts"] == 3 for letter in by["down"]) and len(by["down"]) == 3
    assert [(letter["id"], letter["reason"][:8], letter["attempts"]) for letter in by["all"]] == [(change_id("u1", 100), "HTTP 404", 1)]
    assert by["fail"][0]["change"] in changes and by["fail"][0]["url"] == receiver.url + "/fail"
    invalid = sorted(by[None], key=lambda letter: letter["raw_bytes"])
    assert [letter["raw_bytes"] for letter in invalid] == [len(b'{"user_id": 7}'), len(garbage)]
    assert all(letter["reason"].startswith("invalid segment change") for letter in invalid)
    assert base64.b64decode(invalid[1]["raw_base64"]) == garbage[:64 * 1024]


def test_rate_limit_spaces_an_endpoints_requests(stack, tmp_path, receiver, secret):
    settings = settings_with(tmp_path, {"name": "ok", "url": receiver.url + "/ok", "segments": ["a"],
                                        "concurrency": 4, "rate_limit": 20, **FAST})
    publish(settings, [orjson.dumps(change(f"u{i}", "a", 1)) for i in range(30)])
    service = InProcess(settings)
    try:
        wait_until(lambda: len(receiver.delivered()) == 30, 60, "30 deliveries")
    finally:
        service.stop()
    times = sorted(r.at for r in receiver.requests)
    assert times[-1] - times[0] >= 29 / 20 * 0.95  # 20/s: 29 gaps of 50 ms at least
    assert receiver.max_in_flight["/ok"] <= 4


def test_replay_delivers_the_dead_letters_to_the_fixed_endpoint_once(stack, tmp_path, receiver, secret):
    settings = settings_with(tmp_path, {"name": "cms", "url": receiver.url + "/fail", "segments": ["a"], **FAST,
                                        "retries": 0})
    ids = {change_id(f"u{i}", 1) for i in range(5)}
    publish(settings, [orjson.dumps(change(f"u{i}", "a", 1)) for i in range(5)])
    service = InProcess(settings)
    try:
        wait_until(lambda: len(dlq(settings)) == 5, 60, "5 dead letters")
    finally:
        service.stop()
    assert not receiver.delivered("/fail") and {letter["id"] for letter in dlq(settings)} == ids

    broken = [*PZ, "webhooks", "replay", "--endpoint", "cms",
              "--config", str(write_config(settings, tmp_path / "broken.yaml"))]
    again = subprocess.run(broken, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert "0 delivered, 5 dead-lettered again" in again.stdout, again.stderr
    assert len(dlq(settings)) == 10  # appended after the end the replay read to: it did not chase them

    fixed = settings.with_overrides(activation={"endpoints": [{**settings.activation.endpoints[0].model_dump(mode="json"),
                                                               "url": receiver.url + "/ok"}]})
    config = write_config(fixed, tmp_path / "fixed.yaml")
    replay = [*PZ, "webhooks", "replay", "--endpoint", "cms", "--config", str(config)]
    first = subprocess.run(replay, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "5 delivered, 0 dead-lettered again" in first.stdout
    assert receiver.delivered("/ok") == ids
    second = subprocess.run(replay, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert "0 delivered, 0 dead-lettered again" in second.stdout, second.stderr
    assert receiver.count("/ok") == 5

    unknown = subprocess.run(replay[:-3] + ["nope", "--config", str(config)], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode == 2 and "no endpoint named 'nope'" in unknown.stderr


def test_without_a_secret_the_service_refuses_to_start(stack, tmp_path, receiver, monkeypatch):
    monkeypatch.delenv("PZ_WEBHOOK_SECRET", raising=False)
    settings = settings_with(tmp_path, {"name": "ok", "url": receiver.url + "/ok", "segments": ["a"]})
    config = write_config(settings, tmp_path / "c.yaml")
    result = subprocess.run([*PZ, "webhooks", "run", "--config", str(config)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PZ_WEBHOOK_SECRET")})
    assert result.returncode == 2 and "PZ_WEBHOOK_SECRET" in result.stderr


def test_without_endpoints_the_service_refuses_to_start(stack, tmp_path):
    """It would read and commit changes it delivers nowhere."""
    config = write_config(settings_with(tmp_path), tmp_path / "c.yaml")
    result = subprocess.run([*PZ, "webhooks", "run", "--config", str(config)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no webhook endpoints configured" in result.stderr


def test_sigkill_mid_stream_and_restart_loses_nothing(stack, tmp_path, receiver):
    """Every change is delivered (deduplicated by Idempotency-Key) or dead-lettered, none lost."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    settings = settings_with(
        tmp_path,
        {"name": "ok", "url": receiver.url + "/ok", "segments": ["a"], "concurrency": 2, "rate_limit": 400, **FAST},
        {"name": "fail", "url": receiver.url + "/fail", "segments": ["b"], **FAST, "retries": 1},
        batch_size=50)
    oks = [change(f"u{i % 97}", "a", i) for i in range(1_500)]
    fails = [change(f"v{i}", "b", i) for i in range(40)]
    publish(settings, [orjson.dumps(c) for pair in zip(oks, fails + [None] * len(oks)) for c in pair if c])
    config = write_config(settings, tmp_path / "config.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PZ_WEBHOOK_SECRET")}
    env["PZ_WEBHOOK_SECRET_FILE"] = str(secret_file)
    command = [*PZ, "webhooks", "run", "--config", str(config)]

    first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=(tmp_path / "first.log").open("w"))
    try:
        wait_until(lambda: len(receiver.delivered()) >= 300, 120, "the first deliveries")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert first.returncode == -signal.SIGKILL
    delivered_before = len(receiver.delivered())
    assert delivered_before < len(oks), "the kill came too late to be mid-stream"
    assert not committed_to_end(settings, group_id(settings))

    second = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=(tmp_path / "second.log").open("w"), text=True)
    try:
        wait_until(lambda: receiver.delivered() == {change_id(c["user_id"], c["seq"]) for c in oks}, 180,
                   "every change delivered after the restart")
        wait_until(lambda: committed_to_end(settings, group_id(settings)), 60, "the offsets committed")
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=60)
        print(f"delivered {len(receiver.delivered())} of {len(oks)}; logs in {tmp_path}")
    assert second.returncode == 0
    assert "stopped:" in out
    letters = dlq(settings)
    assert {letter["id"] for letter in letters} == {change_id(c["user_id"], c["seq"]) for c in fails}
    assert all(letter["endpoint"] == "fail" and letter["reason"].startswith("HTTP 500") for letter in letters)
    print(f"delivered before the kill: {delivered_before}; requests to /ok in all: {receiver.count('/ok')} "
          f"for {len(oks)} changes; dead letters {len(letters)} for {len(fails)}")


def test_the_changes_a_real_job_run_made_are_each_delivered_as_written(stack, tmp_path, receiver, secret):
    settings, _ = replayed_run(tmp_path, seed=11, limit=3_000)
    written = read_topic(settings, settings.kafka.topics.segment_changes)
    assert len(written) >= 10 and len({c["segment"] for c in written}) >= 2  # a run that made changes
    settings = settings.with_overrides(activation={"endpoints": [
        {"name": "cms", "url": receiver.url + "/ok", "segments": ["*"], **FAST}]})
    service = InProcess(settings)
    try:
        wait_until(lambda: receiver.delivered() == {change_id(c["user_id"], c["seq"]) for c in written}, 60,
                   f"the {len(written)} changes of the job run")
    finally:
        service.stop()
    received = {json.loads(r.body)["id"]: json.loads(r.body)["change"] for r in receiver.requests}
    assert sorted(received.values(), key=lambda c: (c["user_id"], c["seq"])) == \
        sorted(written, key=lambda c: (c["user_id"], c["seq"]))
