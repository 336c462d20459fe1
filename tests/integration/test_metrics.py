"""The job's custom metrics reach Prometheus from the local MiniCluster, as in `make demo`, and
the REST monitor that draws the demo's progress table reads them too."""

from __future__ import annotations

import urllib.request

from personalization.tools.monitor import FlinkRest
from personalization.replay.producer import RawRecord, produce, produce_raw
from tests.support import free_port, isolated_settings, listening_addresses, start_job, wait_until

T = 1_511_658_000_000
PORTS = range(9260, 9270)


def _scrape() -> str:
    text = ""
    for port in PORTS:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                text += response.read().decode()
        except OSError:
            continue
    return text


def _value(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(f"flink_taskmanager_job_task_operator_personalization_{name}{{"))


def _parsed(metrics: str) -> float:
    return _value(metrics, "events_valid") + _value(metrics, "events_rejected_not_json")


def test_custom_metrics_are_exported_to_prometheus(stack, tmp_path):
    rest_port = free_port()
    settings = isolated_settings(tmp_path, kafka={"bounded": False},
                                 flink={"prometheus_port": f"{PORTS.start}-{PORTS.stop - 1}", "rest_port": rest_port})
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    produce([{"schema_version": 1, "event_id": f"e{i}", "event_type": "page_view", "ts": T + i,
              "user_id": f"u{i % 2}"} for i in range(5)], bootstrap, topic, progress=False)
    produce_raw([RawRecord(b"{broken", None, T)], bootstrap, topic, progress=False)
    client = start_job(settings)
    try:
        # Every one of the six records accounted for by the parse task (its partitions run
        # independently of the user operator, so one count arriving says nothing of the other).
        metrics = wait_until(lambda: (m := _scrape()) and _parsed(m) == 6 and _value(m, "events_processed") == 5
                             and _value(m, "profile_writes") >= 5 and m,
                             120, "6 records parsed and 5 processed on the Prometheus endpoint")
        # The REST view lags the reporter (Flink's metric fetcher caches for seconds): wait until it
        # too has read all six records and processed the five valid ones.
        rest, job_id = FlinkRest(f"http://127.0.0.1:{rest_port}"), str(client.get_job_id())
        status = wait_until(lambda: (s := rest.status(job_id)).events_read == 6
                            and s.counters.get("events_processed") == 5 and s,
                            60, "6 records read and 5 processed on the REST API")
        rest_bound = listening_addresses(rest_port)
        prometheus_bound = set().union(*(listening_addresses(port) for port in PORTS))
    finally:
        client.cancel().result()
    assert _value(metrics, "events_valid") == 5
    assert _value(metrics, "events_rejected_not_json") == 1
    assert _value(metrics, "profile_writes") == 5
    # The demo's "events read" (waited for above) is the parse task's records, valid or rejected;
    # the parse operator's counters (its name holds a "+") reach the REST monitor one by one.
    assert status.counters["events_valid"] == 5 and status.counters["events_rejected_not_json"] == 1
    assert status.restarts == 0
    assert rest_bound == {"127.0.0.1"}  # flink.bind_address, not Flink's every-interface default
    assert prometheus_bound == {"127.0.0.1"}  # the host-bound reporter (jvm/metrics-reporter), likewise
