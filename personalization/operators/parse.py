"""Parse and validate raw Kafka records; invalid ones go to the DLQ side output, never fail the job."""

from __future__ import annotations

import time

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from personalization.config.settings import ValidationConfig
from personalization.udfs.validation import EventValidator, Rejection, dlq_record

DLQ = OutputTag("dlq", Types.STRING())
# ("clock", ms): the latest record time read, rounded up to the end of its second; sent when it
# passes into a new second, broadcast to the user operator (see operators.user_profile).
CLOCK = OutputTag("clock", Types.TUPLE([Types.STRING(), Types.STRING()]))
CLOCK_RESOLUTION_MS = 1_000


class ParseEvents(ProcessFunction):
    """Input rows are (payload, topic, partition, offset, record_ts) from the Kafka table source."""

    def __init__(self, config: ValidationConfig) -> None:
        self._config = config
        self._validator: EventValidator | None = None
        self._rejected: dict[str, object] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._validator = EventValidator(self._config.schema_path, self._config.max_event_bytes,
                                         self._config.max_future_skew)
        self._metrics = runtime_context.get_metrics_group().add_group("personalization")
        self._valid = self._metrics.counter("events_valid")
        self._clock = None

    def process_element(self, row: Row, ctx: ProcessFunction.Context):
        record_ts = ctx.timestamp()
        clock = None if record_ts is None else (record_ts // CLOCK_RESOLUTION_MS + 1) * CLOCK_RESOLUTION_MS - 1
        if clock is not None and (self._clock is None or clock > self._clock):
            self._clock = clock
            yield CLOCK, ("clock", str(clock))
        raw = row[0]
        now = int(time.time() * 1000)
        result = self._validator.validate(raw, ctx.timestamp(), now)
        if isinstance(result, Rejection):
            self._count_rejection(result.reason.value)
            yield DLQ, dlq_record(raw, result, row[1], row[2], row[3], ctx.timestamp(), now).decode()
        else:
            self._valid.inc()
            yield result

    def _count_rejection(self, reason: str) -> None:
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = self._metrics.counter(f"events_rejected_{reason}")
        counter.inc()
