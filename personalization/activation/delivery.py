"""Delivering one change to one endpoint: signed POST, retries with capped jittered backoff,
the endpoint's rate limit and concurrency. Never raises for the receiver's sake: the outcome
says delivered or why not."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from personalization.activation.signing import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    change_id,
    signature,
)
from personalization.config.settings import WebhookEndpoint

RETRYABLE_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True, slots=True)
class Change:
    """A segment change as the job wrote it (``SegmentChange.as_record`` plus ``seq``)."""

    user_id: str
    segment: str
    action: str
    seq: int
    record: dict

    @property
    def id(self) -> str:
        return change_id(self.user_id, self.seq)

    @classmethod
    def parse(cls, value: bytes) -> Change:
        """Raise ValueError naming what is wrong with a record that is not a segment change."""
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        for key, kind in (("user_id", str), ("segment", str), ("action", str), ("seq", int)):
            if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
                raise ValueError(f"field {key!r} missing or not a {kind.__name__}")
        return cls(record["user_id"], record["segment"], record["action"], record["seq"], record)


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    attempts: int
    reason: str = ""  # why not delivered: the last attempt's error


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s  # the receiver's Retry-After, when it sent one


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now: delta-seconds or an HTTP-date (RFC 9110);
    None when absent or unreadable (then the backoff alone decides)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class _HonourRetryAfter:
    """Tenacity wait: the jittered backoff, or longer when the receiver asked for longer
    (``Retry-After`` on a 429 or 503), capped at ``backoff_max``: a receiver cannot park a
    delivery thread for longer than the endpoint's own longest wait."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._backoff = wait_random_exponential(multiplier=initial_s, max=max_s)
        self._max_s = max_s

    def __call__(self, state: RetryCallState) -> float:
        wait = self._backoff(state)
        error = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(error, "retry_after_s", None)
        return wait if asked is None else max(wait, min(asked, self._max_s))


class _Permanent(Exception):
    pass


class RateLimit:
    """Requests spaced at least 1/rate apart across the endpoint's threads (0 = no limit)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        time.sleep(slot - now)


def payload(change: Change) -> bytes:
    return orjson.dumps({"id": change.id, "change": change.record})


class Endpoint:
    """One configured endpoint: its HTTP client, limits and the threads that call it."""

    def __init__(self, config: WebhookEndpoint, secret: bytes) -> None:
        self.config = config
        self._secret = secret
        self._limit = RateLimit(config.rate_limit)
        self._client = httpx.Client(timeout=config.timeout / 1000,
                                    limits=httpx.Limits(max_connections=config.concurrency))
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix=f"webhook-{config.name}")

    def submit(self, change: Change) -> Future[Outcome]:
        return self._pool.submit(self.deliver, change)

    def deliver(self, change: Change) -> Outcome:
        """Post until a 2xx, a non-retryable answer, or the retries run out."""
        cfg = self.config
        retrying = Retrying(
            stop=stop_after_attempt(cfg.retries + 1),
            wait=_HonourRetryAfter(cfg.backoff_initial / 1000, cfg.backoff_max / 1000),
            retry=retry_if_exception_type(_Retryable), reraise=True)
        body = payload(change)
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    self._post(change.id, body)
        except (_Retryable, _Permanent) as err:
            return Outcome(False, attempts, str(err))
        return Outcome(True, attempts)

    def _post(self, key: str, body: bytes) -> None:
        self._limit.wait()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key, TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: signature(self._secret, timestamp, body)}
        try:
            response = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TimeoutException as err:
            raise _Retryable(f"timeout after {self.config.timeout} ms ({type(err).__name__})") from None
        except httpx.HTTPError as err:
            raise _Retryable(f"network error: {type(err).__name__}: {err}") from None
        if response.is_success:
            return
        reason = f"HTTP {response.status_code}: {response.text[:200]!r}"
        if response.status_code in RETRYABLE_STATUS:
            raise _Retryable(reason, retry_after_seconds(response.headers.get("Retry-After")))
        raise _Permanent(reason)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
