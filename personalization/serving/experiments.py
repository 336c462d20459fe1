"""``pz experiment-report NAME``: an experiment's per-variant outcomes from Redis, and the tests
(``core.experiments``), as a table or JSON."""

from __future__ import annotations

import dataclasses
import sys

import click
import orjson
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from personalization.config.cli import with_settings
from personalization.config.settings import Settings
from personalization.core.experiments import Report, Test, report
from personalization.serving.reader import ProfileReader


def experiment_report(settings: Settings, name: str, alpha: float = 0.05) -> Report:
    """The report of a configured experiment; ``KeyError`` naming the configured ones if not."""
    experiments = settings.experiment_map()
    if name not in experiments:
        raise KeyError(f"experiment {name!r} is not configured (configured: {', '.join(experiments) or 'none'})")
    return report(experiments[name], ProfileReader.from_settings(settings).experiment_outcomes(name), alpha)


def render(rep: Report) -> Group:
    """The report for a terminal (fits 80 columns): per variant, exposed users, buyers (a purchase
    after exposure), user conversion, sessions, purchases, revenue, revenue per session and
    mismatched exposures; then each variant against the control, each difference and lift over
    its confidence interval."""
    exp = rep.experiment
    weights = ":".join(f"{t.weight:g}" for t in rep.totals)
    totals = Table(title=f"experiment {exp.name!r} (weights {weights}, audience: {exp.audience or 'every user'})",
                   title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("variant", "users", "buyers", "conv.", "sess.", "buys", "revenue", "rev/sess.", "mism."):
        totals.add_column(column, justify="left" if column == "variant" else "right")
    for t in rep.totals:
        totals.add_row(t.variant, f"{t.users:,}", f"{t.converted_users:,}", _pct(t.conversion), f"{t.sessions:,}",
                       f"{t.purchases:,}", f"{t.revenue:,.0f}", _num(t.revenue_per_session), f"{t.mismatched:,}")
    level = f"{1 - rep.alpha:.0%}"
    tests = Table(title=f"against the control {rep.totals[0].variant!r} (two-sided, alpha {rep.alpha:g}; "
                        f"[{level} interval])", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("variant", "metric", "difference", "lift", "p-value", "signif."):
        tests.add_column(column, justify="left" if column in ("variant", "metric") else "right")
    for c in rep.comparisons:
        for metric, test, fmt, stat in (("conversion", c.conversion, _pp, "z"),
                                        ("rev/session", c.revenue_per_session, _num, "t")):
            statistic = "n/a" if test.statistic is None else f"{stat}={test.statistic:.3f}" + (
                f", df {test.df:.0f}" if test.df else "")
            tests.add_row(c.variant, f"{metric}\n{statistic}", f"{fmt(test.difference)}\n{_interval(test.interval, fmt)}",
                          f"{_lift(test.lift)}\n{_interval(test.lift_interval, _lift)}",
                          _p(test.p_value), _verdict(test, rep.alpha))
    srm = ("sample ratio: n/a (no exposed user)" if rep.srm_p_value is None else
           f"sample ratio: chi-square {rep.srm_chi2:.3f}, p {_p(rep.srm_p_value)}: "
           + ("MISMATCH (p < 0.001): the split is broken, do not trust the results" if rep.sample_ratio_mismatch
              else "no mismatch (its alarm is p < 0.001)"))
    lines = [totals, tests, Text(srm, style="red" if rep.sample_ratio_mismatch else "")]
    if rep.unknown_variants:
        lines.append(Text(f"{rep.unknown_variants} users under a variant the experiment no longer has (left out)",
                          style="yellow"))
    return Group(*lines)


def as_record(rep: Report) -> dict:
    """The report as JSON-ready data (``--json``)."""
    record = dataclasses.asdict(rep)
    record["sample_ratio_mismatch"] = rep.sample_ratio_mismatch
    for t, row in zip(rep.totals, record["totals"]):
        row.update(conversion=t.conversion, revenue_per_session=t.revenue_per_session)
    return record


@click.command()
@click.argument("name")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="Significance level of the tests (intervals are at 1 - alpha).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@with_settings
def report_command(settings: Settings, name: str, alpha: float, as_json: bool) -> None:
    """Report an experiment: per variant, exposed users, sessions, conversions and revenue; against the
    control, conversion lift (two-proportion z-test) and revenue per session (Welch's t-test) with
    confidence intervals; and a sample-ratio-mismatch check (exit 1 if the experiment is not configured)."""
    try:
        rep = experiment_report(settings, name, alpha)
    except KeyError as err:
        click.echo(err.args[0], err=True)
        sys.exit(1)
    if as_json:
        click.echo(orjson.dumps(as_record(rep), option=orjson.OPT_INDENT_2).decode())
    else:
        Console().print(render(rep))


def _verdict(test: Test, alpha: float) -> str:
    return "n/a" if test.p_value is None else ("yes" if test.p_value < alpha else "no")


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _lift(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _pp(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}pp"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _interval(interval: tuple[float, float] | None, fmt) -> str:
    return "n/a" if interval is None else f"[{fmt(interval[0])}, {fmt(interval[1])}]"
