"""The keyed user operator: a thin adapter from Flink state, timers and outputs onto core.user."""

from __future__ import annotations

import orjson
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext

from personalization.config.settings import Settings
from personalization.core.events import Event
from personalization.core.sessions import SessionRules
from personalization.core.user import Outcome, Result, UserLogic
from personalization.serving.redis_store import ProfileWriter, check_connection, connect
from personalization.state.descriptors import USER_STATE

SESSIONS = OutputTag("sessions", Types.STRING())
LATE = OutputTag("late", Types.STRING())


def user_logic(settings: Settings) -> UserLogic:
    time_cfg = settings.time
    return UserLogic(
        session_rules=SessionRules(time_cfg.session_gap, time_cfg.max_session_length,
                                   time_cfg.allowed_lateness),
        window_sizes=tuple(time_cfg.windows.sizes),
        window_buckets=time_cfg.windows.buckets,
        dedup_horizon_ms=settings.profile.dedup_horizon,
        top_categories=settings.profile.top_categories,
    )


class UserProfiles(KeyedProcessFunction):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self._logic = user_logic(self._settings)
        self._state = runtime_context.get_state(USER_STATE)
        cfg = self._settings.redis
        client = connect(cfg)
        check_connection(client, cfg)
        self._writer = ProfileWriter(client, cfg.key_prefix, cfg.profile_ttl, cfg.retry_backoff_max)
        metrics = runtime_context.get_metrics_group().add_group("personalization")
        self._outcomes = {outcome: metrics.counter(f"events_{outcome.value}") for outcome in Outcome}
        self._sessions_emitted = metrics.counter("sessions_emitted")
        self._profile_writes = metrics.counter("profile_writes")

    def process_element(self, event: Event, ctx: KeyedProcessFunction.Context):
        state = self._state.value() or self._logic.new_state(ctx.get_current_key())
        watermark = ctx.timer_service().current_watermark()
        result = self._logic.on_event(state, event, watermark)
        self._outcomes[result.outcome].inc()
        if result.outcome is Outcome.LATE:
            yield LATE, orjson.dumps({
                "reason": "beyond_allowed_lateness",
                "lateness_ms": result.lateness_ms,
                "watermark": watermark,
                "event": _event_record(event),
            }).decode()
        yield from self._carry_out(state, result, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        state = self._state.value()
        if state is None:
            return
        result = self._logic.on_timer(state, ctx.timer_service().current_watermark())
        yield from self._carry_out(state, result, ctx)

    def _carry_out(self, state, result: Result, ctx):
        if result.profile_changed:
            self._state.update(state)
            self._writer.write(self._logic.profile(state))
            self._profile_writes.inc()
        for summary in result.sessions:
            self._sessions_emitted.inc()
            yield SESSIONS, orjson.dumps(summary.as_record()).decode()
        if result.next_timer is not None:
            ctx.timer_service().register_event_time_timer(result.next_timer)


def _event_record(event: Event) -> dict:
    return {name: getattr(event, name) for name in event.__slots__ if getattr(event, name) is not None}
