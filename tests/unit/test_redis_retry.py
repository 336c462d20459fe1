"""The retry policy of every Redis write (``redis_store.retry_while_down``): what is waited out,
what is raised at once, and that the waits stay capped however long an outage lasts."""

from __future__ import annotations

import pytest
import redis
import tenacity

from personalization.serving import redis_store
from personalization.serving.redis_store import is_transient, retry_while_down


@pytest.mark.parametrize("error", [
    redis.ConnectionError("Connection refused"), redis.TimeoutError("timed out"),
    redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
    redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
    redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
    redis.exceptions.TryAgainError("TRYAGAIN"), redis.exceptions.MasterDownError("MASTERDOWN"),
    # a Redis Cluster during a failover, once redis-py's own redirections and retries are used up
    redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
    redis.exceptions.ClusterError("TTL exhausted."), redis.exceptions.MovedError("3999 127.0.0.1:7102"),
    redis.exceptions.AskError("3999 127.0.0.1:7102"), redis.exceptions.SlotNotCoveredError("slot 3999 not covered"),
])
def test_outages_are_waited_out(error):
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    redis.AuthenticationError("invalid username-password pair"),
    redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    redis.exceptions.ClusterCrossSlotError("CROSSSLOT Keys in request don't hash to the same slot"),
    redis.exceptions.RedisClusterException("Too many targets for command"),
    ValueError("a bug"),
])
def test_errors_about_the_write_itself_are_raised(error):
    assert not is_transient(error)


def test_a_send_is_repeated_until_redis_takes_it():
    calls = []
    answers = iter([redis.ConnectionError("down"), redis.exceptions.ReadOnlyError("READONLY"),
                    redis.exceptions.OutOfMemoryError("OOM"), "OK"])

    def send():
        calls.append(1)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_while_down(send, backoff_max_ms=200) == "OK"
    assert len(calls) == 4


def test_a_wrong_type_is_raised_at_the_first_attempt():
    calls = []

    def send():
        calls.append(1)
        raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        retry_while_down(send, backoff_max_ms=1_000)
    assert len(calls) == 1


def test_waits_stay_capped_after_hours_of_outage():
    """The old ``0.05 * 2**attempt`` overflowed at attempt 1024 (~85 minutes of an outage)."""
    wait = tenacity.wait_random_exponential(multiplier=redis_store.RETRY_FIRST_WAIT_S, max=5.0)
    for attempt in (1, 10, 1_024, 100_000):
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        assert 0 <= wait(state) <= 5.0
