"""Keeps `make bench` from rotting: a tiny run must produce a well-formed report (not a fast one).

Run the way docs/performance.md says, `make bench`, with a PATH that holds no virtualenv (nothing
activated, as on a fresh machine): a tool found only on an activated venv's PATH fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kafka import KafkaAdminClient

from personalization.config.settings import REPO_ROOT, load_settings
from tests.support import free_port


def _fresh_machine_env() -> dict[str, str]:
    """The environment without any virtualenv: no VIRTUAL_ENV, no venv bin/ on PATH."""
    venv_bins = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and entry not in venv_bins and not (Path(entry) / "activate").exists()]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": os.pathsep.join(path)}


def _bench_topics() -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=load_settings().kafka.bootstrap_servers)
    try:
        return {topic for topic in admin.list_topics() if topic.startswith("bench-")}
    finally:
        admin.close()


def test_a_small_benchmark_run_writes_its_report_and_leaves_no_topics(stack, datasets, tmp_path):
    out = tmp_path / "bench"
    env = _fresh_machine_env()
    assert str(Path(sys.executable).parent) not in env["PATH"].split(os.pathsep), "the venv is still on PATH"
    topics_before = _bench_topics()
    args = ("--events 3000 --warmup-seconds 2 --latency-seconds 3 --rates 0.5 --ablate state-cache "
            f"--latency-ablate network-buffers --out {out}")
    result = subprocess.run(["make", "bench", f"BENCH_ARGS={args}"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert _bench_topics() <= topics_before, "the bench left its topics on the broker"
    report = json.loads((out / "report.json").read_text())
    assert set(report["throughput"]) == {"core", "tuned", "defaults", "lean"}
    assert all(value > 0 for value in report["throughput"].values())
    [ablation] = report["ablations"]
    assert ablation["name"] == "state-cache" and ablation["events_per_s"] > 0
    assert [(row["run"], row["fraction"]) for row in report["latency"]] == [("tuned", 0.5), ("network-buffers", 0.5)]
    for latency in report["latency"]:
        for phase in ("warmup_ms", "ms"):   # the warm-up's probes, and the measured span's
            assert latency[phase]["n"] > 0 and latency[phase]["p50"] <= latency[phase]["p99"] <= latency[phase]["max"]
    worker = report["worker_profile"]
    assert worker["samples"] > 0 and worker["own"] and worker["inclusive"]
    assert 0 < sum(share for _, share in worker["own"]) <= 1 + 1e-9
    assert all(0 < share <= 1 for _, share in worker["inclusive"])
    # CPU per thread over the profiled span: which threads lead depends on the moment (a tiny
    # run may be past its processing), so only the table's shape is checked.
    threads = worker["threads"]
    assert threads["seconds"] > 0 and threads["total"] > 0 and threads["cores"] >= 1
    assert threads["threads"] and all(share >= 0 for _, _, share in threads["threads"])
    assert [share for _, _, share in threads["threads"]] == sorted((s for _, _, s in threads["threads"]), reverse=True)
    assert "b/d =" in (out / "report.md").read_text() and "py-spy" in (out / "report.md").read_text()
    assert (out / "latency.png").read_bytes().startswith(b"\x89PNG")


def test_a_small_state_scale_run_writes_its_report(stack, datasets, tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "bench.state_scale", "--users", "500", "--backend", "hashmap",
                             "--rest-port", str(free_port()), "--out", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = json.loads((out / "state-scale.json").read_text())
    assert (row["users"], row["users_in_state"], row["events_late"], row["backend"]) == (500, 500, 0, "hashmap")
    assert row["checkpoint_bytes"] > 0 and row["bytes_per_user"] == row["checkpoint_bytes"] / 500
    assert row["jvm_peak_rss_bytes"] > 0
    assert "| 500 | 500 | hashmap |" in (out / "state-scale.md").read_text()
