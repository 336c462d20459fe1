"""A/B experiments: who gets which variant, what each exposed user did after, and the report.

Assignment is a pure function of the experiment's name and the user id (a SHA-256 of both mapped
onto the variants' weights): the same everywhere (the job, the API, a replay tool) and on every
run, with no state. A user is *eligible* while the experiment runs (``start <= t < end`` in event
time) and, if it has an audience, while they are in that segment.

Exposure (an ``exposure`` event: the user saw the variant) starts a user's outcome in the
experiment: from then on, until the experiment's end, their sessions (as the job closes them:
late merges update and retract them), the purchases and revenue (``price * quantity``) in them.
The outcome is kept under the variant *assigned*, whatever the event says (intent to treat); an
exposure naming another variant is counted as ``mismatched`` (a serving bug to look at, shown
in the report). Exposures of a user who is not eligible when the exposure is read are ignored.

The report aggregates the per-user outcomes per variant and compares every variant with the
first (the control): user conversion by a two-proportion z-test, revenue per session by Welch's
t-test, and a sample-ratio-mismatch check (chi-square of exposed users against the weights).
"""

from __future__ import annotations

from typing import Any

import hashlib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from personalization.core import stats
from personalization.core.evolvable import evolvable
from personalization.core.sessions import SessionSummary

EXPOSURE = "exposure"
MAX_TRACKED = 1_000  # sessions (and purchases) kept per user and experiment; beyond, not counted
SRM_ALPHA = 0.001    # a sample-ratio mismatch is flagged below this p-value (a broken split, not chance)


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    variants: tuple[tuple[str, float], ...]  # (variant, weight), the first is the control
    start: int  # event time, ms, inclusive
    end: int    # event time, ms, exclusive
    audience: str | None = None  # a segment; None: every user

    def variant_of(self, user_id: str) -> str:
        """The user's variant: the hash's point in [0, 1) on the cumulative normalized weights."""
        digest = hashlib.sha256(f"{self.name}\x00{user_id}".encode("utf-8", "surrogatepass")).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * sum(w for _, w in self.variants)
        for variant, weight in self.variants:
            point -= weight
            if point < 0:
                return variant
        return self.variants[-1][0]  # float rounding at the very top

    def eligible(self, ts: int | None, segments: Collection[str]) -> bool:
        return ts is not None and self.start <= ts < self.end and (self.audience is None or self.audience in segments)

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.variants)


@evolvable
@dataclass(slots=True)
class ExperimentOutcome:
    """One user's outcome in one experiment (in ``UserState.experiments``)."""

    variant: str
    exposed_at: int
    mismatched: int = 0  # exposures that named another variant than the assigned one
    sessions: dict[str, tuple[int, int]] = field(default_factory=dict)  # session id -> (start, end)
    purchases: list[tuple[int, int | float]] = field(default_factory=list)  # (ts, revenue), in the experiment


def expose(experiments: Mapping[str, Experiment], outcomes: dict[str, ExperimentOutcome], user_id: str,
           segments: Collection[str], name: str | None, variant: str | None, ts: int) -> None:
    """An exposure event. The earliest exposure read is the start (an exposure that arrives late
    moves it back)."""
    experiment = experiments.get(name or "")
    if experiment is None or not experiment.eligible(ts, segments):
        return
    assigned = experiment.variant_of(user_id)
    outcome = outcomes.setdefault(experiment.name, ExperimentOutcome(assigned, ts))
    outcome.exposed_at = min(outcome.exposed_at, ts)
    if variant != assigned:
        outcome.mismatched += 1


def on_purchase(experiments: Mapping[str, Experiment], outcomes: dict[str, ExperimentOutcome], ts: int,
                revenue: float) -> None:
    """A purchase: kept for every experiment the user was exposed to by then, before its end."""
    for name, outcome in outcomes.items():
        experiment = experiments.get(name)
        if (experiment is not None and outcome.exposed_at <= ts < experiment.end
                and len(outcome.purchases) < MAX_TRACKED):
            outcome.purchases.append((ts, revenue))


def on_sessions(experiments: Mapping[str, Experiment], outcomes: dict[str, ExperimentOutcome],
                emitted: Iterable[SessionSummary]) -> None:
    """Sessions the job emitted (closed, updated or retracted): those that end at or after the
    exposure and start before the experiment's end belong to the outcome."""
    for summary in emitted:
        for name, outcome in outcomes.items():
            experiment = experiments.get(name)
            if summary.status == "retracted" or experiment is None:
                outcome.sessions.pop(summary.session_id, None)
            elif summary.end >= outcome.exposed_at and summary.start < experiment.end and (
                    summary.session_id in outcome.sessions or len(outcome.sessions) < MAX_TRACKED):
                outcome.sessions[summary.session_id] = (summary.start, summary.end)


def outcome_record(outcome: ExperimentOutcome) -> dict[str, Any]:
    """What the profile and the experiment's Redis hash hold for the user: counts and sums, so
    the report needs one record per user. Sessions convert with a purchase inside them."""
    session_revenue = [sum(r for ts, r in outcome.purchases if start <= ts <= end)
                       for start, end in outcome.sessions.values()]
    converted = sum(1 for start, end in outcome.sessions.values()
                    if any(start <= ts <= end for ts, _ in outcome.purchases))
    return {
        "variant": outcome.variant,
        "exposed_at": outcome.exposed_at,
        "mismatched": outcome.mismatched,
        "sessions": len(outcome.sessions),
        "converted_sessions": converted,
        "purchases": len(outcome.purchases),
        "revenue": round(sum(r for _, r in outcome.purchases), 6),
        "session_revenue": round(sum(session_revenue), 6),
        "session_revenue_sq": round(sum(r * r for r in session_revenue), 6),
    }


def profile_view(experiments: Mapping[str, Experiment], outcomes: Mapping[str, ExperimentOutcome], user_id: str,
                 last_seen: int | None, segments: Collection[str]) -> dict[str, dict[str, Any]]:
    """The user's experiments as the profile serves them: every experiment they were exposed to
    (with the outcome) and every one they are eligible for now (``exposed_at`` None)."""
    view = {name: outcome_record(outcome) for name, outcome in outcomes.items()}
    for name, experiment in experiments.items():
        if name not in view and experiment.eligible(last_seen, segments):
            view[name] = {"variant": experiment.variant_of(user_id), "exposed_at": None}
    return dict(sorted(view.items()))


# --- the report --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VariantTotals:
    variant: str
    weight: float
    users: int = 0             # exposed users
    converted_users: int = 0   # ...with a purchase after exposure
    sessions: int = 0
    converted_sessions: int = 0
    purchases: int = 0
    revenue: float = 0.0
    session_revenue: float = 0.0
    session_revenue_sq: float = 0.0
    mismatched: int = 0

    @property
    def conversion(self) -> float | None:
        return self.converted_users / self.users if self.users else None

    @property
    def revenue_per_session(self) -> float | None:
        return self.session_revenue / self.sessions if self.sessions else None


@dataclass(frozen=True, slots=True)
class Test:
    """A variant against the control on one metric: the difference (variant - control) with its
    confidence interval, the relative lift with its interval (None where the control is 0), the
    statistic and its two-sided p-value (None where undefined: no data, or no variance)."""

    difference: float | None
    interval: tuple[float, float] | None
    lift: float | None
    lift_interval: tuple[float, float] | None
    statistic: float | None
    p_value: float | None
    df: float | None = None  # Welch's degrees of freedom


@dataclass(frozen=True, slots=True)
class Comparison:
    variant: str
    conversion: Test  # users converted / exposed users, two-proportion z-test
    revenue_per_session: Test  # Welch's t-test


@dataclass(frozen=True, slots=True)
class Report:
    experiment: Experiment
    alpha: float
    totals: tuple[VariantTotals, ...]
    comparisons: tuple[Comparison, ...]
    srm_chi2: float | None
    srm_p_value: float | None
    unknown_variants: int  # records under a variant the experiment no longer has (config changed)

    @property
    def sample_ratio_mismatch(self) -> bool:
        return self.srm_p_value is not None and self.srm_p_value < SRM_ALPHA


def totals(experiment: Experiment, records: Iterable[dict[str, Any]]) -> tuple[tuple[VariantTotals, ...], int]:
    """Per-variant sums of the users' outcome records, and how many records named no variant of
    the experiment."""
    sums = {v: dict.fromkeys(("users", "converted_users", "sessions", "converted_sessions", "purchases",
                              "revenue", "session_revenue", "session_revenue_sq", "mismatched"), 0)
            for v in experiment.variant_names}
    unknown = 0
    for record in records:
        variant = record.get("variant")
        into = sums.get(variant) if isinstance(variant, str) else None
        if into is None:
            unknown += 1
            continue
        into["users"] += 1
        into["converted_users"] += 1 if record["purchases"] else 0
        for name in ("sessions", "converted_sessions", "purchases", "revenue", "session_revenue",
                     "session_revenue_sq", "mismatched"):
            into[name] += record[name]
    weights = dict(experiment.variants)
    return tuple(VariantTotals(v, weights[v], **s) for v, s in sums.items()), unknown


def report(experiment: Experiment, records: Iterable[dict[str, Any]], alpha: float = 0.05) -> Report:
    by_variant, unknown = totals(experiment, records)
    control, *others = by_variant
    comparisons = tuple(Comparison(t.variant, two_proportions(control.converted_users, control.users,
                                                              t.converted_users, t.users, alpha),
                                   welch(_moments(control), _moments(t), alpha)) for t in others)
    chi2, p = sample_ratio(by_variant)
    return Report(experiment, alpha, by_variant, comparisons, chi2, p, unknown)


def two_proportions(x1: int, n1: int, x2: int, n2: int, alpha: float = 0.05) -> Test:
    """Two-proportion z-test (pooled standard error) of x2/n2 against x1/n1; the interval of the
    difference is Wald's (unpooled), the lift's by the delta method on the ratio."""
    if not n1 or not n2:
        return Test(None, None, None, None, None, None)
    p1, p2 = x1 / n1, x2 / n2
    diff = p2 - p1
    z_crit = stats.normal_quantile(1 - alpha / 2)
    v1, v2 = p1 * (1 - p1) / n1, p2 * (1 - p2) / n2
    half = z_crit * math.sqrt(v1 + v2)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = diff / se if se else None
    lift = lift_interval = None
    if p1 > 0:
        lift = diff / p1
        lift_half = z_crit * math.sqrt(v2 / p1**2 + p2**2 * v1 / p1**4)
        lift_interval = (lift - lift_half, lift + lift_half)
    return Test(diff, (diff - half, diff + half), lift, lift_interval, z,
                None if z is None else 2 * stats.normal_sf(abs(z)))


def welch(a: tuple[int, float, float], b: tuple[int, float, float], alpha: float = 0.05) -> Test:
    """Welch's t-test of the mean of ``b`` against ``a``, each given as (n, sum, sum of squares)."""
    (n1, s1, q1), (n2, s2, q2) = a, b
    if n1 < 2 or n2 < 2:
        return Test(None, None, None, None, None, None)
    m1, m2 = s1 / n1, s2 / n2
    v1, v2 = max(q1 - n1 * m1 * m1, 0.0) / (n1 - 1), max(q2 - n2 * m2 * m2, 0.0) / (n2 - 1)
    diff = m2 - m1
    lift = diff / m1 if m1 else None
    se2 = v1 / n1 + v2 / n2
    if se2 <= 0:
        return Test(diff, None, lift, None, None, None)
    df = se2 * se2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    se = math.sqrt(se2)
    half = t_quantile(1 - alpha / 2, df) * se
    t = diff / se
    lift_interval = None if not m1 else ((diff - half) / m1, (diff + half) / m1)
    return Test(diff, (diff - half, diff + half), lift, lift_interval, t, stats.t_sf_two_sided(t, df), df)


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, for p > 0.5 (bisection on the two-sided tail)."""
    lo, hi = 0.0, 1e6
    target = 2 * (1 - p)
    for _ in range(200):
        mid = (lo + hi) / 2
        if stats.t_sf_two_sided(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def sample_ratio(by_variant: tuple[VariantTotals, ...]) -> tuple[float | None, float | None]:
    """Chi-square goodness of fit of the exposed users per variant against the weights."""
    n = sum(t.users for t in by_variant)
    if not n:
        return None, None
    total_weight = sum(t.weight for t in by_variant)
    chi2 = sum((t.users - n * t.weight / total_weight) ** 2 / (n * t.weight / total_weight) for t in by_variant)
    return chi2, stats.chi2_sf(chi2, len(by_variant) - 1)


def _moments(t: VariantTotals) -> tuple[int, float, float]:
    return t.sessions, t.session_revenue, t.session_revenue_sq
