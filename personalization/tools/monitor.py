"""Read a running job's metrics from Flink's REST API (the MiniCluster's or a cluster's)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

METRIC_GROUP = "personalization"
CLOCK_OPERATOR = "user profiles"  # its input watermark is the job's event-time clock


@dataclass
class JobStatus:
    state: str = "UNKNOWN"
    counters: dict[str, int] = field(default_factory=dict)
    watermark: int | None = None
    restarts: int = 0

    @property
    def events_read(self) -> int:
        """Records the parse task took from the events topic: valid plus rejected ones.

        Not the source vertex's ``write-records``: the source is chained with the parse task and
        the rate window's pre-aggregation, so that counts what the chain sends on, i.e. the valid
        events, the rejected ones on their way to the DLQ, the event-time clock ticks (one per
        second of event time) and the per-minute partial counts: more than was read. Like every
        Flink metric it counts the current attempt: after a restart, from the last checkpoint.
        """
        rejected = sum(v for k, v in self.counters.items() if k.startswith("events_rejected_"))
        return self.counters.get("events_valid", 0) + rejected


class FlinkRest:
    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")

    def _get(self, path: str):
        with urllib.request.urlopen(f"{self._base}{path}", timeout=5) as response:
            return json.load(response)

    def status(self, job_id: str) -> JobStatus:
        """Job state, restarts and the job's custom counters summed over operators and subtasks."""
        job = self._get(f"/jobs/{job_id}")
        status = JobStatus(state=job["state"])
        restarts = self._get(f"/jobs/{job_id}/metrics?get=numRestarts")
        status.restarts = int(restarts[0]["value"]) if restarts else 0
        for vertex in job["vertices"]:
            if vertex["name"].startswith(CLOCK_OPERATOR):
                status.watermark = self._watermark(job_id, vertex["id"])
            base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
            ids = [m["id"] for m in self._get(base) if f".{METRIC_GROUP}." in m["id"]]
            if not ids:
                continue
            # quoted: an operator's name is part of the id ("parse_+_validate.personalization.
            # events_valid") and an unquoted "+" reads as a space, an unknown metric
            for metric in self._get(f"{base}?agg=sum&get={urllib.parse.quote(','.join(ids), safe=',')}"):
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
