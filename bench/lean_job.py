"""Run d of ``make bench``: the lean PyFlink floor, what PyFlink itself allows on this machine.

The least a keyed PyFlink job does with these events: the job's Kafka SQL source (raw bytes,
same watermark) and Flink settings, ``orjson`` parsing, ``key_by`` user, one pickled
``ValueState`` per user updated on every event, and a Redis ``HSET`` of the user's profile hash
per event, pipelined per ``FLUSH_EVERY`` events. It writes ``events_total`` and ``updated_at``
like the job, so its rate is measured exactly as the job's (b/d compares like with like).
"""

from __future__ import annotations

import time

import orjson
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StreamTableEnvironment

from personalization.config.settings import RedisConfig, Settings
from personalization.pipelines.job import create_environment, source_ddl
from personalization.serving.redis_store import connect, profile_key

FLUSH_EVERY = 200
LEAN_STATE = ValueStateDescriptor("lean-counts", Types.PICKLED_BYTE_ARRAY())


class LeanProfiles(KeyedProcessFunction):
    """Per user: event counts by type in one pickled value; the profile hash written per event."""

    def __init__(self, redis_config: RedisConfig, forward: bool = False, work_us: int = 0) -> None:
        self._redis_config = redis_config
        self._forward = forward  # one record per event out (``run_lean_job(branch=True)``)
        self._work_us = work_us  # Python work per event, in this operator (``run_lean_job``)

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = runtime_context.get_state(LEAN_STATE)
        self._pipe = connect(self._redis_config).pipeline(transaction=False)
        self._pending = 0

    def process_element(self, event: dict, ctx: KeyedProcessFunction.Context):
        self._count(event, ctx)
        busy(self._work_us)
        return (event["event_id"],) if self._forward else ()

    def _count(self, event: dict, ctx: KeyedProcessFunction.Context) -> None:
        counts = self._state.value() or {}
        counts[event["event_type"]] = counts.get(event["event_type"], 0) + 1
        self._state.update(counts)
        user = ctx.get_current_key()
        self._pipe.hset(profile_key(self._redis_config.key_prefix, user), mapping={
            "user_id": orjson.dumps(user), "events_total": orjson.dumps(sum(counts.values())),
            "updated_at": orjson.dumps(int(time.time() * 1000))})
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self._flush()

    def close(self) -> None:
        if hasattr(self, "_pipe"):
            self._flush()

    def _flush(self) -> None:
        self._pipe.execute()
        self._pending = 0


class Discard(KeyedProcessFunction):
    """The end of ``run_lean_job``'s branch: takes a record and spends ``work_us`` on it."""

    def __init__(self, work_us: int = 0) -> None:
        self._work_us = work_us

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context):
        busy(self._work_us)
        return ()


def busy(work_us: int) -> None:
    """Python work (the interpreter lock held) for ``work_us`` microseconds."""
    if work_us:
        until = time.perf_counter() + work_us / 1e6
        while time.perf_counter() < until:
            pass


def run_lean_job(settings: Settings, hops: int = 0, branch: bool = False, work_us: int = 0,
                 work_in_branch: bool = False) -> None:
    """Run the lean job over the events topic to its end (``kafka.bounded``). ``bench.python_hops``
    adds to it: ``hops`` pass-through Python maps chained before the key-by; with ``branch`` one
    record per event from the keyed operator, keyed by a constant to a Python operator at
    parallelism 1 (the shape of the job's learning records on their way to the trainer); and
    ``work_us`` of Python work per event, in the keyed operator or (``work_in_branch``) in the
    branch's operator."""
    env = create_environment(settings)
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(settings))
    raw = t_env.to_data_stream(t_env.from_path("raw_events"))
    events = raw.map(lambda row: orjson.loads(row[0]), output_type=Types.PICKLED_BYTE_ARRAY())
    for _ in range(hops):
        events = events.map(_same, output_type=Types.PICKLED_BYTE_ARRAY())
    counted = (events.key_by(lambda event: event["user_id"], key_type=Types.STRING())
               .process(LeanProfiles(settings.redis, forward=branch, work_us=0 if work_in_branch else work_us),
                        output_type=Types.STRING()))
    if branch:
        (counted.key_by(lambda _: "one", key_type=Types.STRING())
         .process(Discard(work_us if work_in_branch else 0)).set_parallelism(1))
    env.execute("lean PyFlink floor")


def _same(event: dict) -> dict:
    return event
