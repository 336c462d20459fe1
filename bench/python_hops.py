"""What a Python operator costs per record in thread mode: ``.venv/bin/python -m bench.python_hops``.

Runs the lean PyFlink floor (run d of ``make bench``, ``bench.lean_job``) as it is, with
``--hops`` pass-through Python maps chained in, with a branch of one record per event keyed to a
Python operator at parallelism 1 (the shape of the job's learning records on their way to the
trainer), and with that branch and ``--work-us`` of Python work per event, once in the keyed
operator and once in the branch's operator (another task: another thread on the same
interpreter lock), alternated over the same events; reports each variant's events/s and the
microseconds per event each adds. Writes ``bench/results/python-hops.md``.
"""

from __future__ import annotations

import functools
import statistics

import click

from bench.lean_job import run_lean_job
from bench.run import RESULTS, job_rate, remove_runs, workload
from personalization.config.settings import load_settings


@click.command()
@click.option("--events", "size", type=int, default=20_000, help="Replay events per run.")
@click.option("--hops", type=int, default=3, help="Pass-through Python maps chained in the second variant.")
@click.option("--work-us", type=int, default=100, help="Python work per event in the last two variants.")
@click.option("--rounds", type=int, default=2, help="Alternated rounds of the variants.")
def main(size: int, hops: int, work_us: int, rounds: int) -> None:
    settings = load_settings()
    events = workload(size)
    variants = {"lean floor (d)": run_lean_job,
                f"+ {hops} chained Python maps": functools.partial(run_lean_job, hops=hops),
                "+ a branch to a parallelism-1 Python operator": functools.partial(run_lean_job, branch=True),
                f"+ the branch, {work_us} µs of Python per event in the keyed operator":
                    functools.partial(run_lean_job, branch=True, work_us=work_us),
                f"+ the branch, {work_us} µs of Python per event in the branch's operator":
                    functools.partial(run_lean_job, branch=True, work_us=work_us, work_in_branch=True)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(rounds):
            for name, job in variants.items():
                rates[name].append(job_rate(settings, events, {}, job))
                click.echo(f"{name}: {rates[name][-1]:,.0f} events/s")
    finally:
        remove_runs()
    floor = statistics.median(rates["lean floor (d)"])
    lines = [f"# What a Python operator costs per record (`python -m bench.python_hops --events {size} "
             f"--hops {hops} --work-us {work_us} --rounds {rounds}`)", "",
             "| variant | events/s (each round) | µs per event added (medians) |", "|---|---|---|"]
    for name, values in rates.items():
        added = 1e6 / statistics.median(values) - 1e6 / floor
        per = "" if name == "lean floor (d)" else f"{added:,.1f}"
        if "chained" in name:
            per += f" ({added / hops:,.1f} per map)"
        lines.append(f"| {name} | {', '.join(f'{v:,.0f}' for v in values)} | {per} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "python-hops.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
