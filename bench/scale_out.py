"""Scale-out on a standalone cluster (issue 26, point 4): ``.venv/bin/python -m bench.scale_out``.

The job with the default config (learning on) over the same events on the standalone cluster
of ``tests/flink_cluster.py`` (a JobManager and TaskManagers of one slot each, separate JVMs,
each embedding its own Python), at parallelism 1 on one TaskManager and at parallelism 2 on
two, alternated ``--rounds`` times. Side by side: events/s (first profile write to last, as
``bench.run``), and over that span (polled every second, so start-up is left out) the
TaskManagers' CPU (``/proc``: user + system) and the events per CPU second, the machine's CPU
use, and each task's busy time (Flink's ``busyTimeMsPerSecond`` of its busiest subtask: a task
near 1,000 ms/s is saturated). Writes ``bench/results/scale-out.md``.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import click

from bench.run import RESULTS, job_profiles, remove_runs, workload
from bench.worker_profile import cpu_ticks
from personalization.config.settings import Settings, load_settings
from tests.flink_cluster import FlinkCluster

TICKS = os.sysconf("SC_CLK_TCK")
BUSY = "busyTimeMsPerSecond"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    return cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


class Poll(NamedTuple):
    at_ms: float
    cpu_s: float                  # the TaskManagers' CPU seconds so far
    machine: tuple[float, float]  # the machine's (busy, total) CPU seconds so far
    busy: dict[str, float]        # task -> its busiest subtask's busyTimeMsPerSecond


class ClusterRun:
    """A ``job`` for ``bench.run.job_profiles``: the job on a fresh cluster of ``taskmanagers``
    TaskManagers at that parallelism, run to the end of its bounded input, polled every second."""

    def __init__(self, taskmanagers: int) -> None:
        self.taskmanagers = taskmanagers
        self.polls: list[Poll] = []

    def __call__(self, settings: Settings) -> None:
        with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
            cluster = FlinkCluster(Path(tmp) / "flink")
            try:
                cluster.start_jobmanager()
                pids = [cluster.start_taskmanager() for _ in range(self.taskmanagers)]
                job_id = cluster.submit(settings)
                while (job := cluster.rest(f"/jobs/{job_id}"))["state"] not in ("FINISHED", "FAILED", "CANCELED"):
                    self.polls.append(Poll(time.time() * 1000, sum(map(cpu_seconds, pids)), machine_busy(),
                                           self._busy(cluster, job)))
                    time.sleep(1.0)
                if job["state"] != "FINISHED":
                    raise RuntimeError(f"the job ended {job['state']}")
            finally:
                cluster.shutdown()

    @staticmethod
    def _busy(cluster: FlinkCluster, job: dict) -> dict[str, float]:
        """Each task's busiest subtask's busy time, for the job as ``/jobs/<id>`` last gave it."""
        busy = {}
        for vertex in job["vertices"]:
            metrics = cluster.rest(f"/jobs/{job['jid']}/vertices/{vertex['id']}/subtasks/metrics?get={BUSY}&agg=max")
            value = metrics[0].get("max") if metrics else None
            if value is not None and math.isfinite(float(value)):
                busy[_task(vertex["name"])] = float(value)
        return busy

    def over(self, first_ms: float, last_ms: float) -> dict:
        """The TaskManagers' CPU seconds, the machine's busy share and each task's mean busy time
        between the polls at the ends of [first_ms, last_ms] (the processing span)."""
        polls = [p for p in self.polls if first_ms <= p.at_ms <= last_ms]
        if len(polls) < 2:
            raise RuntimeError("fewer than two polls within the processing span: more --events")
        start, end = polls[0], polls[-1]
        busy, total = (e - s for e, s in zip(end.machine, start.machine))
        tasks = {task for p in polls for task in p.busy}
        return {"cpu_s": end.cpu_s - start.cpu_s, "cpu_span_s": (end.at_ms - start.at_ms) / 1000,
                "machine": busy / total,
                "busy": {t: statistics.mean(p.busy[t] for p in polls if t in p.busy) for t in tasks}}


def _task(name: str) -> str:
    """A vertex's operators without the run's topic names, shortened to what tells them apart."""
    name = re.sub(r"bench-[0-9a-f]{8}-", "", name)
    return name if len(name) <= 80 else name[:77] + "..."


def measure(base: Settings, events: list[dict], taskmanagers: int) -> dict:
    run = ClusterRun(taskmanagers)
    profiles, span_s = job_profiles(base, events, {"parallelism": taskmanagers}, run)
    processed = sum(p["events_total"] for p in profiles)
    if processed != len(events):
        raise RuntimeError(f"{processed:,} events counted in the profiles, {len(events):,} sent")
    last = max(p["updated_at"] for p in profiles)
    measured = run.over(last - span_s * 1000, last)
    # Events per CPU second over the polled part of the span, at the run's own rate.
    rate = processed / span_s
    return {"taskmanagers": taskmanagers, "events_per_s": rate, **measured,
            "events_per_cpu_s": rate * measured["cpu_span_s"] / measured["cpu_s"]}


def _median(rows: list[dict], taskmanagers: int, key: str) -> float:
    return statistics.median(row[key] for row in rows if row["taskmanagers"] == taskmanagers)


def report(rows: list[dict], events: int, rounds: int) -> str:
    lines = ["# Scale-out on a standalone cluster", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `.venv/bin/python -m bench.scale_out "
             f"--events {events} --rounds {rounds}`. The default config (learning on), the same {events:,} "
             "events in every run; each run on a fresh cluster (one slot per TaskManager).", "",
             "| TaskManagers = parallelism | events/s | TaskManager CPU s per s | events per CPU s | machine busy |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['taskmanagers']} | {row['events_per_s']:,.0f} | {row['cpu_s'] / row['cpu_span_s']:.2f} | "
                     f"{row['events_per_cpu_s']:,.0f} | {row['machine']:.0%} |")
    two_by_one = _median(rows, 2, "events_per_s") / _median(rows, 1, "events_per_s")
    per_cpu = _median(rows, 2, "events_per_cpu_s") / _median(rows, 1, "events_per_cpu_s") - 1
    lines += ["", f"Medians: parallelism 2 / 1 = **{two_by_one:.2f}x** events/s; events per TaskManager CPU "
                  f"second {per_cpu:+.0%} from one TaskManager to two.", "",
              "Busy time of each task (`busyTimeMsPerSecond` of its busiest subtask, the mean over the polls "
              "within the processing span of the last run of each parallelism; 1,000 is saturated):", "",
              "| task | parallelism 1 | parallelism 2 |", "|---|---|---|"]
    last = {r["taskmanagers"]: r["busy"] for r in rows}
    for task in sorted(set(last.get(1, {})) | set(last.get(2, {}))):
        cells = [f"{last[p][task]:,.0f}" if task in last.get(p, {}) else "" for p in (1, 2)]
        lines.append(f"| {task} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--events", "size", type=int, default=20_000, show_default=True, help="Events per run.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Alternated pairs of runs (1, then 2).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
def main(size: int, rounds: int, out: Path) -> None:
    settings, events = load_settings(), workload(size)
    rows = []
    try:
        for _ in range(rounds):
            for taskmanagers in (1, 2):
                row = measure(settings, events, taskmanagers)
                click.echo(f"parallelism {taskmanagers}: {row['events_per_s']:,.0f} events/s, "
                           f"{row['events_per_cpu_s']:,.0f} events per TaskManager CPU s, machine {row['machine']:.0%}")
                rows.append(row)
    finally:
        remove_runs()
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale-out.md").write_text(report(rows, size, rounds))
    click.echo(f"report: {out / 'scale-out.md'}")


if __name__ == "__main__":
    main()
