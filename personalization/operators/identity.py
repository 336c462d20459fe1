"""The identity resolver: a thin keyed adapter onto ``core.identity`` (read that for the design).

Keyed by the anonymous id (else the user id), upstream of the user operator; it re-keys events
by setting ``Event.user_id`` and adds the ``Stitch`` and ``HandOver`` records of a link, which the
user operator, keyed by ``core.identity.profile_key``, carries out. Only events with an anonymous
id come here (the parse task's ``ANONYMOUS`` side output); the others skip this hop.
"""

from __future__ import annotations

from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from personalization.config.settings import Settings
from personalization.core.events import Event
from personalization.core.identity import IdentityRules, IdentityState, Resolution
from personalization.state.cached import CachedValueState
from personalization.state.descriptors import IDENTITY_STATE


class ResolveIdentities(KeyedProcessFunction):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        settings = self._settings
        self._rules = IdentityRules(settings.identity.max_anonymous_events, settings.time.allowed_lateness)
        self._state = CachedValueState(runtime_context.get_state(IDENTITY_STATE), settings.flink.state_cache_size)
        metrics = runtime_context.get_metrics_group().add_group("personalization")
        self._resolutions = {r: metrics.counter(f"identity_{r.value}") for r in Resolution}

    def process_element(self, event: Event, ctx: KeyedProcessFunction.Context):
        key = ctx.get_current_key()
        state = self._state.value(key) or IdentityState()
        routing = self._rules.route(state, event, ctx.timer_service().current_watermark())
        self._resolutions[routing.resolution].inc()
        if routing.changed:
            self._state.update(key, state)
        yield from routing.out
