"""``make bench-state``: memory and checkpoint size/time with many distinct users in state.

Input: the real replay (``bench.run.workload``), each event re-keyed to a user of its own, so
``--users`` events leave that many users in state, each with one real event (its session,
windows, devices, segments and dedup entry). The events are re-timed, in order, onto
``OPEN_SPAN_MS`` of event time, shorter than the session gap: no session closes during the run, so
the state holds every user with an open session (the larger per-user state), and the run
measures the state, not the work of closing sessions and expiring windows, which at ~2,200 new
users per minute of event time kept this run below 200 users/s (the throughput bench measures
that work). The job runs unbounded on the local MiniCluster
with the chosen state backend; once every event is processed, the next periodic checkpoint
covers every user, and its size and duration come from Flink's REST API. Memory is the peak
resident set (VmHWM) of the JVM that runs the MiniCluster and the embedded Python workers.

Writes ``bench/results/state-scale.md`` and ``state-scale.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
import uuid
from pathlib import Path

import click

from bench.poll import wait_for
from bench.run import RESULTS, _run_settings, remove_runs, workload
from bench.worker_profile import gateway_jvm_pid
from personalization.config.settings import load_settings
from personalization.pipelines.control import stop_with_savepoint
from personalization.pipelines.main import run_job
from personalization.tools.monitor import FlinkRest
from personalization.replay.producer import produce
from personalization.serving.reader import ProfileReader


OPEN_SPAN_MS = 20 * 60_000   # < time.session_gap (30 min by default)


def distinct_users(count: int) -> list[dict]:
    events = workload(count)
    start = events[0]["ts"]
    return [{**event, "user_id": f"{event['user_id']}~u{i}", "event_id": f"{event['event_id']}~u{i}",
             "ts": start + i * OPEN_SPAN_MS // count}
            for i, event in enumerate(events)]


def measure(users: int, backend: str, rest_port: int, tmp: Path) -> dict:
    settings = _run_settings(load_settings(), {"state_backend": backend, "rest_port": rest_port},
                             {"bounded": False})
    started = time.monotonic()
    produce(distinct_users(users), settings.kafka.bootstrap_servers, settings.kafka.topics.events)
    produced_s = time.monotonic() - started
    client = run_job(settings, wait=False)
    rest = FlinkRest(f"http://127.0.0.1:{rest_port}")
    job_id = str(client.get_job_id())
    try:
        wait_for(lambda: _processed(rest, job_id) > 0, 300, "the first event", client=client)
        started = time.monotonic()
        wait_for(lambda: _processed(rest, job_id) >= users, 6 * 3600, "every event", client=client)
        processing_s = time.monotonic() - started
        counters = rest.status(job_id).counters
        after = _latest_checkpoint_id(rest, job_id)
        checkpoint = wait_for(lambda: _completed_after(rest, job_id, after), 600, "a checkpoint after the last event")
        return {
            "users": users, "backend": backend, "produce_s": produced_s, "processing_s": processing_s,
            # one event per user: an applied event is a user in state (a late one would not be)
            "users_in_state": counters.get("events_processed", 0), "events_late": counters.get("events_late", 0),
            "events_per_s": users / processing_s,
            "checkpoint_bytes": checkpoint["state_size"],
            "checkpoint_persisted_bytes": checkpoint.get("checkpointed_size", checkpoint["state_size"]),
            "checkpoint_ms": checkpoint["end_to_end_duration"],
            "bytes_per_user": checkpoint["state_size"] / max(1, counters.get("events_processed", 0)),
            "jvm_peak_rss_bytes": _jvm_peak_rss(),
        }
    finally:
        stop_with_savepoint(client, (tmp / uuid.uuid4().hex).as_uri())
        ProfileReader.from_settings(settings).delete_all()


def _processed(rest: FlinkRest, job_id: str) -> int:
    """Events the user operator has dealt with (applied, duplicate or late)."""
    status = rest.try_status(job_id)
    return sum(status.counters.get(f"events_{o}", 0) for o in ("processed", "duplicate", "late")) if status else 0


def _latest_checkpoint_id(rest: FlinkRest, job_id: str) -> int:
    latest = rest.checkpoints(job_id)["latest"]["completed"]
    return latest["id"] if latest else 0


def _completed_after(rest: FlinkRest, job_id: str, after: int) -> dict | None:
    latest = rest.checkpoints(job_id)["latest"]["completed"]
    return latest if latest and latest["id"] > after else None


def _jvm_peak_rss() -> int:
    """Peak RSS of the gateway JVM that hosts the MiniCluster (and, in thread mode, the Python)."""
    status = Path(f"/proc/{gateway_jvm_pid()}/status").read_text()
    return int(status.split("VmHWM:", 1)[1].split()[0]) * 1024


def write_report(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "state-scale.json").write_text(json.dumps(rows, indent=2))
    lines = ["# State scale", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `make bench-state`.", "",
             "| users | in state | backend | events/s | checkpoint size | persisted (incremental) | checkpoint time | "
             "bytes/user | JVM peak RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['users']:,} | {r['users_in_state']:,} | {r['backend']} | {r['events_per_s']:,.0f} | "
                     f"{r['checkpoint_bytes'] / 2**20:,.0f} MiB | {r['checkpoint_persisted_bytes'] / 2**20:,.0f} MiB | "
                     f"{r['checkpoint_ms'] / 1000:.1f} s | {r['bytes_per_user']:,.0f} | "
                     f"{r['jvm_peak_rss_bytes'] / 2**30:.2f} GiB |")
    (out / "state-scale.md").write_text("\n".join(lines) + "\n")


@click.command()
@click.option("--users", type=int, default=1_000_000, help="Distinct users to put in state.")
@click.option("--backend", type=click.Choice(["rocksdb", "hashmap"]), default="rocksdb")
@click.option("--rest-port", type=int, default=8091, help="REST port of the run's MiniCluster.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS)
def main(users: int, backend: str, rest_port: int, out: Path) -> None:
    try:
        row = measure(users, backend, rest_port, out / "savepoints")
    finally:
        remove_runs()
    click.echo(json.dumps(row, indent=2))
    write_report([row], out)


if __name__ == "__main__":
    main()
