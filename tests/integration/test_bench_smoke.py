"""Keeps `make bench` from rotting: a tiny run must produce a well-formed report (not a fast one)."""

from __future__ import annotations

import json
import subprocess
import sys

from personalization.config.settings import REPO_ROOT
from tests.support import free_port


def test_a_small_benchmark_run_writes_its_report(stack, datasets, tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "bench.run", "--events", "3000", "--warmup-seconds", "2",
                             "--latency-seconds", "3", "--rates", "0.5", "--ablate", "state-cache",
                             "--latency-ablate", "network-buffers", "--out", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["throughput"]) == {"core", "tuned", "defaults"}
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
    assert "b/a =" in (out / "report.md").read_text() and "py-spy" in (out / "report.md").read_text()
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
