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

    def __init__(self, redis_config: RedisConfig) -> None:
        self._redis_config = redis_config

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = runtime_context.get_state(LEAN_STATE)
        self._pipe = connect(self._redis_config).pipeline(transaction=False)
        self._pending = 0

    def process_element(self, event: dict, ctx: KeyedProcessFunction.Context):
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
        return ()

    def close(self) -> None:
        if hasattr(self, "_pipe"):
            self._flush()

    def _flush(self) -> None:
        self._pipe.execute()
        self._pending = 0


def run_lean_job(settings: Settings) -> None:
    """Run the lean job over the events topic to its end (``kafka.bounded``)."""
    env = create_environment(settings)
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(settings))
    raw = t_env.to_data_stream(t_env.from_path("raw_events"))
    (raw.map(lambda row: orjson.loads(row[0]), output_type=Types.PICKLED_BYTE_ARRAY())
        .key_by(lambda event: event["user_id"], key_type=Types.STRING())
        .process(LeanProfiles(settings.redis)))
    env.execute("lean PyFlink floor")
