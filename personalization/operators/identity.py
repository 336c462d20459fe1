"""The identity resolver and the link index: thin keyed adapters onto ``core.identity`` (read that
for the design).

The resolver is keyed by the anonymous id (else the user id), upstream of the user operator; it
re-keys events by setting ``Event.user_id`` and adds the ``Stitch`` and ``HandOver`` records of a
link, which the user operator, keyed by ``udfs.keys.user_key``, carries out. Only events
with an anonymous id come here (the parse task's ``ANONYMOUS`` side output); the others skip this
hop. Erasure requests pass it too (keyed by the id they name), after the link index (keyed by
user id, fed the links and the requests) added a ``ForgetLink`` per anonymous id of the user.
"""

from __future__ import annotations

from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from personalization.config.settings import Settings
from personalization.core.events import Event
from personalization.core.identity import Erasure, IdentityRules, IdentityState, LinkIndex, Resolution
from personalization.core.privacy import ConsentRules, ErasureRequest
from personalization.state.cached import CachedValueState
from personalization.state.descriptors import IDENTITY_STATE, LINK_INDEX


class ResolveIdentities(KeyedProcessFunction):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        settings = self._settings
        self._rules = IdentityRules(settings.identity.max_anonymous_events, settings.time.allowed_lateness,
                                    ConsentRules(settings.privacy.consent_default))
        self._state = CachedValueState(runtime_context.get_state(IDENTITY_STATE), settings.flink.state_cache_size)
        metrics = runtime_context.get_metrics_group().add_group("personalization")
        self._resolutions = {r: metrics.counter(f"identity_{r.value}") for r in Resolution}

    def process_element(self, item: Event | Erasure, ctx: KeyedProcessFunction.Context):
        key = ctx.get_current_key()
        state = self._state.value(key) or IdentityState()
        if isinstance(item, Event):
            routing = self._rules.route(state, item, ctx.timer_service().current_watermark())
        else:
            routing = self._rules.erase(state, item)
        self._resolutions[routing.resolution].inc()
        if routing.changed:
            self._state.update(key, state)
        yield from routing.out


class IndexLinks(KeyedProcessFunction):
    """Keyed by user id: the anonymous ids that linked to the user, so that the user's erasure
    request reaches each of them at the resolver (``LinkIndex.fan_out``); forgotten with the user."""

    def __init__(self, settings: Settings) -> None:
        self._cache_size = settings.flink.state_cache_size

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = CachedValueState(runtime_context.get_state(LINK_INDEX), self._cache_size)

    def process_element(self, item: Event | ErasureRequest, ctx: KeyedProcessFunction.Context):
        user = ctx.get_current_key()
        index = self._state.value(user) or LinkIndex()
        if isinstance(item, ErasureRequest):
            if index.anonymous_ids:
                self._state.clear(user)
            yield from index.fan_out(item)
        elif index.note(item):
            self._state.update(user, index)
