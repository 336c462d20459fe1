"""The rate anomaly detector's core: robust z-scores per series, empty minutes as zeros."""

from personalization.core.anomaly import ALL, MINUTE_MS, RateHistory, RateRules, close_minute

RULES = RateRules(history_minutes=30, min_history=10, threshold=6.0, min_deviation=10)
T0 = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS


def _steady(history: RateHistory, minutes: int, counts: dict[str, int], start: int = 0) -> list:
    alerts = []
    for m in range(start, start + minutes):
        alerts += close_minute(history, RULES, T0 + m * MINUTE_MS, counts)
    return alerts


def test_a_steady_series_with_ordinary_noise_raises_nothing():
    history = RateHistory()
    alerts = []
    for m in range(60):
        noise = (-7, 3, 0, 5, -2, 8, -4)[m % 7]  # within ~1 sqrt(100) of the median
        alerts += close_minute(history, RULES, T0 + m * MINUTE_MS, {"page_view": 100 + noise, "purchase": m % 3})
    assert alerts == []


def test_a_spike_and_a_drop_are_reported_with_their_minute_series_and_direction():
    history = RateHistory()
    assert _steady(history, 20, {"page_view": 100, "purchase": 2}) == []
    spike = close_minute(history, RULES, T0 + 20 * MINUTE_MS, {"page_view": 1000, "purchase": 2})
    assert {(a.kind, a.event_type, a.minute_start) for a in spike} == {
        ("spike", "page_view", T0 + 20 * MINUTE_MS), ("spike", ALL, T0 + 20 * MINUTE_MS)}
    drop = close_minute(history, RULES, T0 + 21 * MINUTE_MS, {"page_view": 5, "purchase": 2})
    assert {(a.kind, a.event_type) for a in drop} == {("drop", "page_view"), ("drop", ALL)}
    assert all(a.z < -6 for a in drop) and drop[0].as_record()["minute_end"] == T0 + 22 * MINUTE_MS


def test_minutes_without_any_event_are_zeros_an_outage_is_a_drop():
    history = RateHistory()
    _steady(history, 15, {"page_view": 100})
    alerts = close_minute(history, RULES, T0 + 17 * MINUTE_MS, {"page_view": 100})  # minutes 15, 16 empty
    assert sorted((a.minute_start - T0) // MINUTE_MS for a in alerts if a.event_type == ALL) == [15, 16]
    assert all(a.kind == "drop" and a.events == 0 for a in alerts)


def test_nothing_alerts_before_min_history_and_small_deviations_never_do():
    history = RateHistory()
    assert _steady(history, 9, {"purchase": 1}) == []
    assert close_minute(history, RULES, T0 + 9 * MINUTE_MS, {"purchase": 1000}) == []  # 9 minutes of history
    quiet = RateHistory()
    _steady(quiet, 20, {"purchase": 1})
    assert close_minute(quiet, RULES, T0 + 20 * MINUTE_MS, {"purchase": 9}) == []  # z = 8, but only 8 events off


def test_history_is_bounded_and_a_type_gone_for_the_whole_history_is_forgotten():
    history = RateHistory()
    _steady(history, 40, {"page_view": 100, "favorite": 50})
    assert len(history.series["page_view"]) == RULES.history_minutes
    _steady(history, 31, {"page_view": 100}, start=40)
    assert "favorite" not in history.series and len(history.series[ALL]) == RULES.history_minutes
