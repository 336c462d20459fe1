"""Parse and validate raw Kafka records; invalid ones go to the DLQ side output, never fail the job.

Valid events are completed here, before they are keyed by user: a missing ``category_id`` is
looked up in the item catalog (``enrichment.item_catalog``), and with ``privacy.pseudonymize``
the user and anonymous ids are replaced by their keyed pseudonyms, so no raw id reaches keyed state, Redis or an
output topic. (The DLQ keeps the original bytes, which may hold raw ids: see docs/contract.md.)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from personalization.config.settings import EnrichmentConfig, PrivacyConfig, ValidationConfig
from personalization.core.events import Event
from personalization.operators.outputs import DLQ
from personalization.udfs.catalog import load_catalog
from personalization.udfs.pseudonymize import Pseudonymizer
from personalization.udfs.validation import EventValidator, Rejection, dead_letter

# ("clock", ms): the latest record time read, rounded up to the end of its second; sent when it
# passes into a new second, broadcast to the user operator (see operators.user_profile).
CLOCK = OutputTag("clock", Types.TUPLE([Types.STRING(), Types.STRING()]))
CLOCK_RESOLUTION_MS = 1_000
# Events that carry an anonymous id (links included): only they need the identity resolver
# (operators.identity); the others go straight to the user operator, one keyed hop fewer.
ANONYMOUS = OutputTag("anonymous")
# The source gives a record stamped too far in the future this rowtime, so that it cannot move
# the watermark (pipelines.job.source_ddl); its real Kafka timestamp is in the row.
SUSPENDED_ROWTIME = 0


class ParseEvents(ProcessFunction):
    """Input rows are (payload, topic, partition, offset, record_ts, event_time) from the Kafka
    table source; the record's rowtime is event_time (= record_ts unless too far in the future)."""

    def __init__(self, config: ValidationConfig, enrichment: EnrichmentConfig | None = None,
                 privacy: PrivacyConfig | None = None, experiments: dict[str, tuple[str, ...]] | None = None) -> None:
        """``experiments``: name -> variants, what exposure events are checked against."""
        self._config = config
        self._experiments = experiments or {}
        self._enrichment = enrichment or EnrichmentConfig()
        self._privacy = privacy or PrivacyConfig()
        self._validator: EventValidator | None = None
        self._rejected: dict[str, object] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._validator = EventValidator(self._config.schema_path, self._config.max_event_bytes,
                                         self._config.max_future_skew, self._config.max_event_age,
                                         self._experiments)
        self._metrics = runtime_context.get_metrics_group().add_group("personalization")
        self._valid = self._metrics.counter("events_valid")
        self._clock = None
        path = self._enrichment.catalog_path
        self._catalog = load_catalog(path) if path else None
        # The key is read here, on the TaskManager, from its environment: never in the job graph.
        self._pseudonym = Pseudonymizer(self._privacy.pseudonym_key_env) if self._privacy.pseudonymize else None
        self._categorised = self._metrics.counter("events_categorised")

    def process_element(self, row: Row, ctx: ProcessFunction.Context):
        record_ts = ctx.timestamp()
        clock = None if record_ts is None else (record_ts // CLOCK_RESOLUTION_MS + 1) * CLOCK_RESOLUTION_MS - 1
        if clock is not None and (self._clock is None or clock > self._clock):
            self._clock = clock
            yield CLOCK, ("clock", str(clock))
        raw = row[0] if row[0] is not None else b""  # a tombstone (null value) is an empty record
        now = int(time.time() * 1000)
        if record_ts == SUSPENDED_ROWTIME and row[4] is not None:
            record_ts = _epoch_ms(row[4])  # the real Kafka timestamp (for the checks and the DLQ)
        result = self._validator.validate(raw, record_ts, now)
        if isinstance(result, Rejection):
            self._count_rejection(result.reason.value)
            yield DLQ, dead_letter(raw, result, row[1], row[2], row[3], record_ts, now).to_wire()
        else:
            self._valid.inc()
            event = self._complete(result)
            if event.anonymous_id is None:
                yield event
            else:
                yield ANONYMOUS, event

    def _complete(self, event: Event) -> Event:
        completed = complete_event(event, self._catalog, self._pseudonym)
        if completed.category_id is not event.category_id:
            self._categorised.inc()
        return completed

    def _count_rejection(self, reason: str) -> None:
        counter = self._rejected.get(reason)
        if counter is None:
            counter = self._rejected[reason] = self._metrics.counter(f"events_rejected_{reason}")
        counter.inc()


def complete_event(event: Event, catalog: dict[str, str] | None,
                   pseudonym: Callable[[str], str] | None) -> Event:
    """The category from the catalog when the event names an item but no category (the event's
    own category wins), and the pseudonyms in place of the user and anonymous ids."""
    changes = {}
    if catalog is not None and event.category_id is None and event.item_id is not None:
        category = catalog.get(event.item_id)
        if category is not None:
            changes["category_id"] = category
    if pseudonym is not None:  # both ids: an anonymous id is as personal as a user id
        changes["user_id"] = pseudonym(event.user_id)
        if event.anonymous_id is not None:
            changes["anonymous_id"] = pseudonym(event.anonymous_id)
    return dataclasses.replace(event, **changes) if changes else event


def _epoch_ms(instant) -> int:
    """A TIMESTAMP_LTZ field as epoch ms: thread mode hands the ``java.time.Instant`` itself,
    process mode PyFlink's ``Instant`` (or a ``datetime``)."""
    if hasattr(instant, "toEpochMilli"):
        return int(instant.toEpochMilli())
    if hasattr(instant, "to_epoch_milli"):
        return int(instant.to_epoch_milli())
    return int(instant.timestamp() * 1000)
