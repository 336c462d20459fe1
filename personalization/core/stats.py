"""The few distributions the experiment report needs, in plain Python (scipy is not a dependency:
it would add ~40 MB to the job's image for three functions).

Normal tail: ``math.erfc``. Student's t and chi-square tails: the regularized incomplete beta and
gamma functions, by the continued fractions and series of Numerical Recipes (Press et al., 3rd
ed., 6.2 and 6.4), accurate to ~1e-12 in the ranges a report meets; ``tests/unit/test_stats.py``
checks them against tabulated values.
"""

from __future__ import annotations

import math

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 10_000


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def normal_quantile(p: float) -> float:
    """The z with P(Z <= z) = p (bisection on ``normal_sf``: called once per report)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1 - normal_sf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's t with ``df`` (real, > 0) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for a chi-square X with ``df`` degrees of freedom."""
    if x <= 0:
        return 1.0
    return upper_incomplete_gamma(df / 2, x / 2)


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if not 0 <= x <= 1:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0, 1):
        return float(x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):  # the continued fraction converges fast here
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Lentz's method for the continued fraction of I_x(a, b)."""
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > _TINY else _TINY)
            c = 1 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def upper_incomplete_gamma(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x)."""
    if x < a + 1:  # the series of P converges fast here
        term = total = 1 / a
        for n in range(1, _MAX_ITER):
            term *= x / (a + n)
            total += term
            if abs(term) < abs(total) * _EPS:
                return 1 - total * math.exp(-x + a * math.log(x) - math.lgamma(a))
        raise ArithmeticError(f"incomplete gamma series did not converge (a={a}, x={x})")
    b = x + 1 - a  # Lentz's method for the continued fraction of Q
    c, d = 1 / _TINY, 1 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        if abs(d * c - 1) < _EPS:
            return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h
    raise ArithmeticError(f"incomplete gamma fraction did not converge (a={a}, x={x})")
