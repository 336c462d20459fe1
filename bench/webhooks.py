"""Webhook deliveries/s: the activation service (a subprocess, as deployed) posting segment
changes to a local receiver that answers 200 at once (bench/webhook_receiver.py).

    .venv/bin/python -m bench.webhooks [--changes 20000] [--concurrency 8]

The rate is counted from the receiver's first request to its last (the consumer's group join
is left out). Not part of `make test` or `make bench`; it leaves no topics behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import orjson
import yaml

from bench.poll import wait_for
from bench.run import _run_settings, remove_runs
from bench.webhook_receiver import Receiver
from personalization.config.settings import REPO_ROOT, Settings, load_settings
from personalization.replay.producer import RawRecord, produce_raw


def changes(count: int) -> list[bytes]:
    return [orjson.dumps({"user_id": f"u{i % 5_000}", "segment": "engaged_reader", "action": "enter",
                          "cause": {"rule": "engaged_reader.entry", "features": {"dwell_ms_session": 190_000}},
                          "event_time": 1_511_658_060_000 + i, "rules_version": "bench", "seq": i})
            for i in range(count)]


def publish(settings: Settings, values: list[bytes]) -> None:
    """The values onto the segment-changes topic, every one acknowledged."""
    produce_raw([RawRecord(value) for value in values], settings.kafka.bootstrap_servers,
                settings.kafka.topics.segment_changes, progress=False)


def measure(count: int, concurrency: int) -> dict:
    receiver = Receiver()
    endpoint = {"name": "bench", "url": receiver.url + "/ok", "segments": ["*"], "concurrency": concurrency}
    settings = _run_settings(load_settings(), {}, {})
    settings = settings.with_overrides(activation={"endpoints": [endpoint]})
    publish(settings, changes(count))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
        env = {**os.environ, "PZ_WEBHOOK_SECRET": "bench"}
        service = subprocess.Popen([sys.executable, "-m", "personalization", "webhooks", "run", "--config", str(config)],
                                   cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(receiver.requests) >= count, 600, f"{count} deliveries", interval_s=0.2)
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(60)
            receiver.close()
    times = sorted(r.at for r in receiver.requests)
    return {"changes": count, "concurrency": concurrency, "requests": len(times),
            "distinct_ids": len(receiver.delivered()),
            "deliveries_per_s": round((len(times) - 1) / (times[-1] - times[0]))}


@click.command()
@click.option("--changes", "count", type=int, default=20_000, help="Segment changes to deliver.")
@click.option("--concurrency", type=int, default=8, help="The endpoint's concurrency.")
def main(count: int, concurrency: int) -> None:
    try:
        row = measure(count, concurrency)
    finally:
        remove_runs()
    click.echo(json.dumps(row))


if __name__ == "__main__":
    main()
