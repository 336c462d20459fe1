"""Read a running job's metrics from Flink's REST API (the MiniCluster's or a cluster's)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

METRIC_GROUP = "personalization"
CLOCK_OPERATOR = "user profiles"  # its input watermark is the job's event-time clock


@dataclass
class JobStatus:
    state: str = "UNKNOWN"
    counters: dict[str, int] = field(default_factory=dict)
    records_read: int = 0
    watermark: int | None = None


class FlinkRest:
    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")

    def _get(self, path: str):
        with urllib.request.urlopen(f"{self._base}{path}", timeout=5) as response:
            return json.load(response)

    def status(self, job_id: str) -> JobStatus:
        """Job state and the job's custom counters summed over operators and subtasks."""
        job = self._get(f"/jobs/{job_id}")
        status = JobStatus(state=job["state"])
        for vertex in job["vertices"]:
            if vertex["name"].startswith("Source"):
                status.records_read += vertex["metrics"].get("write-records", 0)
            if vertex["name"].startswith(CLOCK_OPERATOR):
                status.watermark = self._watermark(job_id, vertex["id"])
            base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
            ids = [m["id"] for m in self._get(base) if f".{METRIC_GROUP}." in m["id"]]
            if not ids:
                continue
            for metric in self._get(f"{base}?agg=sum&get={','.join(ids)}"):
                name = metric["id"].rsplit(".", 1)[-1]
                status.counters[name] = status.counters.get(name, 0) + int(metric.get("sum", 0))
        return status

    def _watermark(self, job_id: str, vertex_id: str) -> int | None:
        values = [int(w["value"]) for w in self._get(f"/jobs/{job_id}/vertices/{vertex_id}/watermarks")]
        return min(values) if values else None

    def stop(self, job_id: str, directory: str, drain: bool, timeout_s: float = 120) -> str:
        """``flink stop [--drain]`` over REST: stop with a savepoint and return its location."""
        request = urllib.request.Request(
            f"{self._base}/jobs/{job_id}/stop", method="POST",
            data=json.dumps({"drain": drain, "targetDirectory": directory}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            trigger = json.load(response)["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self._get(f"/jobs/{job_id}/savepoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status["operation"]
                if "failure-cause" in operation:
                    raise RuntimeError(f"stop with savepoint failed: {operation['failure-cause']}")
                return operation["location"]
            time.sleep(0.25)
        raise TimeoutError(f"no savepoint for job {job_id} after {timeout_s:.0f} s")

    def checkpoints(self, job_id: str) -> dict:
        """Flink's checkpoint statistics (``latest.completed``: id, state_size, end_to_end_duration...)."""
        return self._get(f"/jobs/{job_id}/checkpoints")

    def running_jobs(self) -> list[str]:
        return [job["id"] for job in self._get("/jobs")["jobs"] if job["status"] == "RUNNING"]

    def try_status(self, job_id: str) -> JobStatus | None:
        try:
            return self.status(job_id)
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return None
