"""A/B experiments (personalization.core.experiments, core.stats): assignment, the per-user
outcome in UserLogic, exposure validation, the statistics against tabulated values, and a
planted effect the report must detect (and an A/A split it must not)."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import orjson
import pytest

from personalization.config.settings import EVENT_SCHEMA, ConfigError, load_settings
from personalization.core import stats
from personalization.core.events import Event
from personalization.core.experiments import Experiment, report, two_proportions, welch
from personalization.core.sessions import SessionRules
from personalization.core.user import END_OF_INPUT, UserLogic
from personalization.udfs.validation import EventValidator, Reason, Rejection

AB = Experiment("ab", (("control", 1.0), ("treatment", 1.0)), start=1_000, end=100_000)
LOGIC = UserLogic(session_rules=SessionRules(gap_ms=1_000, max_length_ms=10_000, allowed_lateness_ms=500),
                  window_sizes=(10_000,), window_buckets=10, dedup_horizon_ms=100_000, top_categories=2,
                  experiments={AB.name: AB})


# --- statistics ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (stats.normal_quantile(0.975), 1.959963985),
    (stats.normal_sf(1.0), 0.158655254),
    (stats.t_sf_two_sided(3.0, 1), 1 - 2 / math.pi * math.atan(3.0)),   # df 1: Cauchy
    (stats.t_sf_two_sided(2.0, 2), 1 - 2.0 / math.sqrt(2 + 2.0**2)),    # df 2: closed form
    (stats.t_sf_two_sided(2.0, 10), 0.073388034),
    (stats.t_sf_two_sided(3.0, 1e9), 2 * stats.normal_sf(3.0)),         # ~ the normal
    (stats.chi2_sf(3.841458821, 1), 0.05),
    (stats.chi2_sf(10.0, 4), 6 * math.exp(-5)),                         # df 4: e^(-x/2) (1 + x/2)
    (stats.chi2_sf(50.0, 2), math.exp(-25)),                            # df 2: e^(-x/2)
    (stats.incomplete_beta(2, 3, 0.4), 0.5248),                         # sum of binomial terms, by hand
])
def test_distributions_match_known_values(value: float, expected: float) -> None:
    assert value == pytest.approx(expected, rel=2e-5)


@pytest.mark.parametrize(("t", "df"), [(1.5, 3.7), (0.4, 12.3), (2.2, 55.5)])
def test_t_tail_at_a_fractional_df_matches_the_integrated_density(t: float, df: float) -> None:
    """Welch's df is fractional: check against the density integrated numerically."""
    assert stats.t_sf_two_sided(t, df) == pytest.approx(_t_tail_integrated(t, df), rel=1e-3)


def test_two_proportions_against_a_worked_example() -> None:
    # 200/1000 vs 250/1000: pooled 0.225, se sqrt(0.225 * 0.775 * 0.002) = 0.018675, z = 2.6774
    test = two_proportions(200, 1000, 250, 1000)
    assert test.difference == pytest.approx(0.05)
    assert test.statistic == pytest.approx(2.6774, abs=1e-4)
    assert test.p_value == pytest.approx(0.007419, rel=1e-3)
    assert test.lift == pytest.approx(0.25)
    low, high = test.interval  # Wald: 0.05 +- 1.959964 * sqrt(.2 * .8 / 1000 + .25 * .75 / 1000) = 0.05 +- 0.036536
    assert (low, high) == (pytest.approx(0.013464, abs=1e-5), pytest.approx(0.086536, abs=1e-5))


def test_welch_against_a_worked_example() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    test = welch(_moments(a), _moments(b))
    # means 3 and 7, variances 2.5 and 14: se = sqrt(0.5 + 2.3333) = 1.6833, t = 2.3763,
    # df = 2.8333^2 / (0.5^2 / 4 + 2.3333^2 / 5) = 8.0278 / 1.1514 = 6.9723
    assert test.statistic == pytest.approx(2.3763, abs=1e-4)
    assert test.df == pytest.approx(6.9723, abs=1e-3)
    assert test.p_value == pytest.approx(_t_tail_integrated(2.3763, 6.9723), rel=1e-3)


def test_no_variance_gives_no_p_value_rather_than_a_division_by_zero() -> None:
    assert welch((10, 0.0, 0.0), (10, 0.0, 0.0)).p_value is None
    assert two_proportions(0, 100, 0, 100).p_value is None
    assert two_proportions(0, 0, 1, 10).p_value is None


def test_a_planted_effect_is_detected_and_an_a_a_split_is_not() -> None:
    rng = random.Random(3)
    planted = report(AB, [_record(v, rng, 0.05 if v == "control" else 0.08) for v in _split(rng, 10_000)])
    (comparison,) = planted.comparisons
    assert comparison.conversion.p_value < 0.001
    assert comparison.conversion.interval[0] > 0 and comparison.conversion.lift > 0.2
    assert comparison.revenue_per_session.p_value < 0.05  # the extra buyers spend too
    assert not planted.sample_ratio_mismatch
    aa = report(AB, [_record(v, rng, 0.05) for v in _split(rng, 10_000)])
    assert aa.comparisons[0].conversion.p_value > 0.05
    assert aa.comparisons[0].conversion.interval[0] < 0 < aa.comparisons[0].conversion.interval[1]


def test_a_sample_ratio_mismatch_is_flagged() -> None:
    rng = random.Random(4)
    skewed = ["control"] * 5_300 + ["treatment"] * 4_700  # 53/47 on a 50/50 experiment
    rep = report(AB, [_record(v, rng, 0.05) for v in skewed])
    assert rep.sample_ratio_mismatch and rep.srm_p_value < 1e-6
    assert not report(AB, [_record(v, rng, 0.05) for v in ["control"] * 5_050 + ["treatment"] * 4_950]
                      ).sample_ratio_mismatch


# --- assignment ------------------------------------------------------------------------------

def test_assignment_is_stable_and_follows_the_weights() -> None:
    weighted = Experiment("w", (("a", 1.0), ("b", 3.0)), 0, 1)
    users = [f"user-{i}" for i in range(40_000)]
    first = [weighted.variant_of(u) for u in users]
    assert first == [weighted.variant_of(u) for u in users]
    assert first.count("b") / len(users) == pytest.approx(0.75, abs=0.01)
    # another experiment's split is independent of this one
    other = Experiment("w2", weighted.variants, 0, 1)
    both_b = sum(1 for u, v in zip(users, first) if v == "b" and other.variant_of(u) == "b")
    assert both_b / len(users) == pytest.approx(0.75 * 0.75, abs=0.01)


def test_eligibility_is_the_window_in_event_time_and_the_audience() -> None:
    targeted = Experiment("t", AB.variants, 1_000, 2_000, audience="vip")
    assert targeted.eligible(1_000, {"vip"}) and not targeted.eligible(2_000, {"vip"})
    assert not targeted.eligible(1_500, {"other"}) and not targeted.eligible(None, {"vip"})


# --- in the user logic -----------------------------------------------------------------------

def test_an_exposed_user_s_sessions_purchases_and_revenue_are_counted_after_exposure() -> None:
    user = "u1"
    variant = AB.variant_of(user)
    state = LOGIC.new_state(user)
    LOGIC.on_event(state, _ev(user, 500, "before", "purchase", revenue=99.0), 0)  # before the experiment
    assert LOGIC.profile(state)["experiments"] == {}
    LOGIC.on_event(state, _ev(user, 1_500, "seen", "exposure", experiment="ab", variant=variant), 0)
    LOGIC.on_event(state, _ev(user, 1_800, "buy", "purchase", revenue=10.0), 0)
    LOGIC.on_event(state, _ev(user, 5_000, "later", "page_view"), 0)
    LOGIC.on_event(state, _ev(user, 5_500, "buy2", "purchase", revenue=2.5), 0)
    LOGIC.on_timer(state, END_OF_INPUT)
    record = LOGIC.profile(state)["experiments"]["ab"]
    # sessions [500, 1800] (ends after the exposure) and [5000, 5500]; the purchase at 500 is not counted
    assert record == {"variant": variant, "exposed_at": 1_500, "mismatched": 0, "sessions": 2,
                      "converted_sessions": 2, "purchases": 2, "revenue": 12.5, "session_revenue": 12.5,
                      "session_revenue_sq": 10.0**2 + 2.5**2}
    assert state.counts.get("exposure") is None  # not behaviour: no counter, window or session


def test_an_unexposed_eligible_user_is_served_the_assignment_and_a_mismatch_is_counted() -> None:
    user = "u2"
    variant = AB.variant_of(user)
    other = next(v for v, _ in AB.variants if v != variant)
    state = LOGIC.new_state(user)
    LOGIC.on_event(state, _ev(user, 1_200, "v", "page_view"), 0)
    assert LOGIC.profile(state)["experiments"] == {"ab": {"variant": variant, "exposed_at": None}}
    LOGIC.on_event(state, _ev(user, 1_300, "x1", "exposure", experiment="ab", variant=other), 0)
    LOGIC.on_event(state, _ev(user, 1_250, "x0", "exposure", experiment="ab", variant=variant), 0)  # earlier
    record = LOGIC.profile(state)["experiments"]["ab"]
    assert (record["variant"], record["exposed_at"], record["mismatched"]) == (variant, 1_250, 1)


def test_exposures_outside_the_window_or_to_unknown_experiments_are_ignored() -> None:
    state = LOGIC.new_state("u3")
    LOGIC.on_event(state, _ev("u3", 100_000, "late", "exposure", experiment="ab", variant="control"), 0)
    LOGIC.on_event(state, _ev("u3", 5_000, "gone", "exposure", experiment="removed", variant="a"), 0)
    assert state.experiments == {}


# --- the contract ----------------------------------------------------------------------------

VALIDATOR = EventValidator(EVENT_SCHEMA, max_event_bytes=4096, max_future_skew_ms=0,
                           experiments={"ab": ("control", "treatment")})


@pytest.mark.parametrize(("changes", "reason", "path", "detail"), [
    ({"variant": ...}, Reason.SCHEMA_VIOLATION, "$", "variant"),
    ({"experiment": ...}, Reason.SCHEMA_VIOLATION, "$", "experiment"),
    ({"variant": ""}, Reason.SCHEMA_VIOLATION, "$.variant", "variant"),
    ({"experiment": "nope"}, Reason.UNKNOWN_EXPERIMENT, "$.experiment", "'nope' is not configured"),
    ({"variant": "blue"}, Reason.UNKNOWN_EXPERIMENT, "$.variant", "'blue' is not a variant"),
])
def test_a_malformed_exposure_is_rejected_with_its_reason(changes, reason, path, detail) -> None:
    payload = {"schema_version": 1, "event_id": "e", "event_type": "exposure", "ts": 1_000, "user_id": "u",
               "experiment": "ab", "variant": "control"}
    for key, value in changes.items():
        payload.pop(key) if value is ... else payload.__setitem__(key, value)
    result = VALIDATOR.validate(orjson.dumps(payload), 1_000, 1_000)
    assert isinstance(result, Rejection), result
    assert (result.reason, result.path) == (reason, path) and detail in result.detail


def test_a_valid_exposure_is_an_event_with_its_experiment_and_variant() -> None:
    payload = {"schema_version": 1, "event_id": "e", "event_type": "exposure", "ts": 1_000, "user_id": "u",
               "experiment": "ab", "variant": "treatment"}
    event = VALIDATOR.validate(orjson.dumps(payload), 1_000, 1_000)
    assert (event.event_type, event.experiment, event.variant) == ("exposure", "ab", "treatment")


@pytest.mark.parametrize(("override", "problem"), [
    ("experiments=[{name: x, variants: [{name: a}], start: 0, end: 1}]", "at least 2"),
    ("experiments=[{name: x, variants: [{name: a}, {name: a}], start: 0, end: 1}]", "unique"),
    ("experiments=[{name: x, variants: [{name: a}, {name: b}], start: 5, end: 5}]", "end must be after start"),
    ("experiments=[{name: x, variants: [{name: a}, {name: b}], start: '2017-11-25T00:00:00', end: 9}]",
     "offset"),
    ("experiments=[{name: x, variants: [{name: a, weight: 0}, {name: b}], start: 0, end: 1}]", "greater than 0"),
])
def test_bad_experiment_config_is_refused_naming_the_problem(override: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(None, [override])


def test_config_dates_become_event_time_ms() -> None:
    settings = load_settings(None, ["experiments=[{name: x, variants: [{name: a}, {name: b, weight: 3}], "
                                    "audience: vip, start: 2017-11-25T00:00:00Z, end: 2017-11-26T00:00:00+01:00}]"])
    assert settings.experiment_map()["x"] == Experiment("x", (("a", 1.0), ("b", 3.0)), 1_511_568_000_000,
                                                        1_511_650_800_000, "vip")


def _t_tail_integrated(t: float, df: float) -> float:
    """P(|T| > t) by Simpson's rule on Student's density, out to 2000."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    xs = np.linspace(t, 2_000, 2_000_001)
    ys = np.exp(log_c - (df + 1) / 2 * np.log1p(xs * xs / df))
    h = xs[1] - xs[0]
    return 2 * h / 3 * (ys[0] + ys[-1] + 4 * ys[1:-1:2].sum() + 2 * ys[2:-1:2].sum())


def _ev(user: str, ts: int, eid: str, etype: str, **fields) -> Event:
    return Event(event_id=eid, event_type=etype, ts=ts, user_id=user, **fields)


def _split(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(("control", "treatment")) for _ in range(n)]


def _record(variant: str, rng: random.Random, p: float) -> dict:
    """A user with 1-3 sessions, converting with probability ``p`` (one session, 20-60 spent)."""
    sessions = rng.randint(1, 3)
    revenue = rng.uniform(20, 60) if rng.random() < p else 0.0
    return {"variant": variant, "sessions": sessions, "converted_sessions": int(revenue > 0),
            "purchases": int(revenue > 0), "revenue": revenue, "session_revenue": revenue,
            "session_revenue_sq": revenue * revenue, "mismatched": 0}


def _moments(values: list[float]) -> tuple[int, float, float]:
    return len(values), sum(values), sum(v * v for v in values)


def test_an_event_pickled_before_the_experiment_fields_restores_with_their_defaults() -> None:
    """Identity state holds pickled events (``IdentityState.held``): a savepoint's older events
    are lists of the fields they had."""
    old = Event.__new__(Event)
    old.__setstate__(["e", "click", 1, "u", "i", None, None, None, None, None, None, "a"])
    assert old == Event("e", "click", 1, "u", item_id="i", anonymous_id="a")
    new = Event("e", "exposure", 1, "u", revenue=2.0, experiment="ab", variant="control")
    assert pickle.loads(pickle.dumps(new)) == new
