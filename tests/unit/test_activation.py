"""Webhook building blocks in isolation: change parsing, ids, signatures, the rate limit, the
endpoint config. (Deliveries against a real receiver: tests/integration/test_webhooks.py.)"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from urllib.parse import unquote

import orjson
import pytest

from bench.webhook_receiver import Receiver
from personalization.activation.delivery import Change, Endpoint, RateLimit, payload, retry_after_seconds
from personalization.activation.signing import SecretMissing, change_id, load_secret, signature
from personalization.config.settings import ConfigError, Settings, WebhookEndpoint, load_settings


def record(**overrides) -> dict:
    return {"user_id": "u1", "segment": "s", "action": "enter", "cause": {"rule": "s.entry", "features": {}},
            "event_time": 1, "rules_version": "v", "seq": 3, **overrides}


def test_a_change_round_trips_into_the_payload_with_its_id() -> None:
    change = Change.parse(orjson.dumps(record()))
    assert (change.user_id, change.segment, change.action, change.seq) == ("u1", "s", "enter", 3)
    assert orjson.loads(payload(change)) == {"id": "u1:3", "change": record()}


@pytest.mark.parametrize("value, problem", [
    (os.urandom(1_000_000), "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (orjson.dumps(record(seq="3")), "'seq'"),
    (orjson.dumps(record(seq=True)), "'seq'"),
    (orjson.dumps({k: v for k, v in record().items() if k != "user_id"}), "'user_id'"),
])
def test_what_is_not_a_change_is_refused_with_a_reason(value: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Change.parse(value)


@pytest.mark.parametrize("user", ["{}:*", "a:b:c", "ü\r\nX-Evil: 1", "x" * 10_000])
def test_change_ids_are_header_safe_and_split_at_the_last_colon(user: str) -> None:
    key = change_id(user, 42)
    assert key.isascii() and not any(c in key for c in "\r\n ")
    encoded, seq = key.rsplit(":", 1)
    assert (unquote(encoded), seq) == (user, "42")


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id": "u1:3"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"k", "1700000000", body) == "sha256=" + expected
    assert signature(b"k", "1700000001", body) != signature(b"k", "1700000000", body)


def test_secret_from_env_or_file_and_a_clear_error_without(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PZ_T_SECRET", raising=False)
    monkeypatch.delenv("PZ_T_SECRET_FILE", raising=False)
    with pytest.raises(SecretMissing, match="PZ_T_SECRET or PZ_T_SECRET_FILE"):
        load_secret("PZ_T_SECRET")
    monkeypatch.setenv("PZ_T_SECRET", "from-env")
    assert load_secret("PZ_T_SECRET") == b"from-env"
    (tmp_path / "s").write_text("from-file\n")
    monkeypatch.setenv("PZ_T_SECRET_FILE", str(tmp_path / "s"))
    assert load_secret("PZ_T_SECRET") == b"from-file"


def test_rate_limit_spaces_requests_across_threads() -> None:
    limit, times = RateLimit(50), []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            limit.wait()
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times.sort()
    assert times[-1] - times[0] >= 19 / 50 * 0.95
    start = time.monotonic()
    RateLimit(0).wait()
    assert time.monotonic() - start < 0.05


def test_endpoint_config_is_validated() -> None:
    ok = {"name": "cms", "url": "https://cms.example/h", "segments": ["a"]}
    settings = Settings().with_overrides(activation={"endpoints": [ok]})
    endpoint = settings.activation.endpoints[0]
    assert endpoint.wants("a", "exit") and not endpoint.wants("b", "enter")
    assert Settings().with_overrides(activation={"endpoints": [{**ok, "segments": ["*"]}]}).activation.endpoints[0].wants("z", "enter")
    for bad, problem in [([ok, ok], "unique"), ([{**ok, "url": "ftp://x"}], "url"),
                         ([{**ok, "url": "http://cms:99999/h"}], "url"), ([{**ok, "url": "http://"}], "url"),
                         ([{**ok, "segments": []}], "segments"), ([{**ok, "actions": ["stay"]}], "actions"),
                         ([{**ok, "concurrency": 0}], "concurrency"), ([{**ok, "timeout": "soon"}], "timeout"),
                         ([{**ok, "secret": "inline"}], "unknown key")]:
        with pytest.raises(ConfigError, match=problem):
            Settings().with_overrides(activation={"endpoints": bad})
    assert load_settings().activation.endpoints == []


@pytest.mark.parametrize(("header", "seconds"), [
    ("7", 7.0), (" 0 ", 0.0), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    (None, None), ("", None), ("soon", None), ("-3", None), ("1.5", None)])
def test_retry_after_reads_seconds_or_an_http_date(header, seconds) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds(header, now=now) == seconds


def deliver_to_a_busy_receiver(backoff_max: str):
    """One change to a real receiver that answers 429 with Retry-After: 1, then 200; the
    endpoint's own backoff starts at 10 ms. Returns the outcome and the two requests."""
    receiver = Receiver()
    endpoint = Endpoint(WebhookEndpoint(name="busy", url=f"{receiver.url}/busy", segments=["*"],
                                        backoff_initial="10ms", backoff_max=backoff_max), b"secret")
    try:
        outcome = endpoint.deliver(Change.parse(orjson.dumps(record())))
    finally:
        endpoint.close()
        receiver.close()
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 200)
    return outcome, first, second


def test_a_retry_waits_as_long_as_the_receivers_retry_after_asks() -> None:
    outcome, first, second = deliver_to_a_busy_receiver("5s")
    assert outcome.delivered and outcome.attempts == 2
    assert second.at - first.at >= 1.0  # only the header explains a second's wait


def test_retry_after_is_capped_at_backoff_max() -> None:
    outcome, first, second = deliver_to_a_busy_receiver("200ms")
    assert outcome.delivered
    assert 0.0 < second.at - first.at < 1.0  # the receiver asked for 1 s; the cap is 200 ms
