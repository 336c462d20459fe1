"""The rate anomaly detector: a thin adapter from Flink state and timers onto core.anomaly.

Its input is the per-minute event counts per type that the SQL window of ``pipelines.job``
emits when the watermark passes a minute (rows ``(event_type, events, ...)`` stamped with the
minute's last millisecond). One key, parallelism 1: a handful of rows per minute, never one
per event. The rows of a minute are collected, and a timer at that minute's last millisecond
evaluates them together: the window emits every row of a minute before it forwards the
watermark that fires the timer.
"""

from __future__ import annotations

import orjson
from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from personalization.config.settings import AlertsConfig
from personalization.core.anomaly import MINUTE_MS, RateHistory, RateRules, close_minute
from personalization.state.descriptors import RATE_HISTORY, RATE_MINUTES



def rate_rules(config: AlertsConfig) -> RateRules:
    return RateRules(history_minutes=config.history // MINUTE_MS, min_history=config.min_history // MINUTE_MS,
                     threshold=config.threshold, min_deviation=config.min_deviation)


class RateAlerts(KeyedProcessFunction):
    def __init__(self, config: AlertsConfig) -> None:
        self._rules = rate_rules(config)

    def open(self, runtime_context: RuntimeContext) -> None:
        self._history = runtime_context.get_state(RATE_HISTORY)
        self._minutes = runtime_context.get_map_state(RATE_MINUTES)  # minute's last ms -> {type: events}
        self._alerts = runtime_context.get_metrics_group().add_group("personalization").counter("rate_alerts")

    def process_element(self, row, ctx: KeyedProcessFunction.Context):
        minute_end = ctx.timestamp()
        counts = self._minutes.get(minute_end) or {}
        counts[row[0]] = counts.get(row[0], 0) + row[1]
        self._minutes.put(minute_end, counts)
        ctx.timer_service().register_event_time_timer(minute_end)
        return ()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        counts = self._minutes.get(timestamp) or {}
        self._minutes.remove(timestamp)
        history = self._history.value() or RateHistory()
        alerts = close_minute(history, self._rules, timestamp + 1 - MINUTE_MS, counts)
        self._history.update(history)
        for alert in alerts:
            self._alerts.inc()
            yield orjson.dumps(alert.as_record()).decode()
