"""Thin Flink adapters of ``core.recommend.stream``: the user side keyed by user, the item side
keyed by item (both at the job's parallelism), their state one pickled value per key."""

from __future__ import annotations

from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from personalization.config.settings import Settings
from personalization.core.events import Event
from personalization.core.recommend.stream import CoView, ItemRow, Request, UserHistory, answer, learn, user_step
from personalization.serving.reco_store import RecommendationWriter
from personalization.serving.redis_store import check_connection, connect
from personalization.state.descriptors import reco_item_state, reco_user_state


def item_of(message: CoView | Request) -> str:
    """The item side's key."""
    return message.item


class RecoUsers(KeyedProcessFunction):
    """Events of one user -> co-view updates and a top-N request (``core.recommend.stream.user_step``)."""

    def __init__(self, settings: Settings) -> None:
        self._config = settings.recommendations.core()
        self._consent_default = settings.privacy.consent_default

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = runtime_context.get_state(reco_user_state(self._config.state_ttl_ms))

    def process_element(self, event: Event, ctx: KeyedProcessFunction.Context):
        history = self._state.value() or UserHistory()
        out = user_step(history, self._config, self._consent_default, event.user_id, event.item_id,
                        event.category_id, event.event_type, event.ts, event.consent)
        if out or event.consent is not None:
            self._state.update(history)
        yield from out


class RecoItems(KeyedProcessFunction):
    """One item's neighbour row: learns co-views, answers requests by writing the user's top-N to Redis."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._config = settings.recommendations.core()

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = runtime_context.get_state(reco_item_state(self._config.state_ttl_ms))
        cfg = self._settings.redis
        client = connect(cfg)
        check_connection(client, cfg)
        self._writer = RecommendationWriter(client, cfg.key_prefix, self._config.ttl_ms, cfg.retry_backoff_max)
        group = runtime_context.get_metrics_group().add_group("personalization")
        self._written = group.counter("recommendations_written")

    def process_element(self, message: CoView | Request, ctx: KeyedProcessFunction.Context):
        row = self._state.value() or ItemRow()
        if isinstance(message, CoView):
            learn(row, message, self._config)
        else:
            self._writer.write(answer(row, message, self._config))
            self._written.inc()
        self._state.update(row)
        return iter(())
