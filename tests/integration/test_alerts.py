"""The in-stream rate anomaly detector on a real replay with a spike and an outage injected.

Real Taobao events (with seeded synthetic signals) are re-timed onto 40 minutes of event time at
120 events a minute; minute 25 gets ten times as many (a spike), minute 32 none at all (an
outage of the input). The job must report exactly those two on the series of all events, and
the alerts topic is read to its end offsets.
"""

from __future__ import annotations

import orjson

from personalization.core.anomaly import ALL, MINUTE_MS
from personalization.pipelines.main import run_job
from personalization.replay.producer import produce, replay_events
from tests.support import isolated_settings, read_all

PER_MINUTE, MINUTES, SPIKE, OUTAGE = 120, 40, 25, 32


def _shaped(events: list[dict]) -> list[dict]:
    """``events`` re-timed onto whole minutes, ``PER_MINUTE`` a minute but for the spike and outage."""
    start = events[0]["ts"] // MINUTE_MS * MINUTE_MS
    pool = iter(events)
    out = []
    for minute in range(MINUTES):
        n = {SPIKE: 10 * PER_MINUTE, OUTAGE: 0}.get(minute, PER_MINUTE)
        for i in range(n):
            out.append({**next(pool), "ts": start + minute * MINUTE_MS + i * MINUTE_MS // n})
    return out


def test_a_spike_and_an_outage_in_a_real_replay_are_each_reported_once(stack, datasets, tmp_path):
    needed = (MINUTES + 9) * PER_MINUTE
    events = _shaped(list(replay_events("taobao", augmented=True, seed=5, limit=needed)))
    settings = isolated_settings(tmp_path, learning={"enabled": False})
    produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    run_job(settings)

    alerts = [orjson.loads(record.value) for record in read_all(settings, settings.kafka.topics.alerts)]
    start = events[0]["ts"] // MINUTE_MS * MINUTE_MS
    on_all = sorted(((a["minute_start"] - start) // MINUTE_MS, a["kind"]) for a in alerts if a["event_type"] == ALL)
    assert on_all == [(SPIKE, "spike"), (OUTAGE, "drop")]
    spike = next(a for a in alerts if a["event_type"] == ALL and a["kind"] == "spike")
    assert spike["events"] == 10 * PER_MINUTE and spike["median"] == PER_MINUTE
    # The busiest type spikes too; every alert is of one of the two injected minutes.
    assert {((a["minute_start"] - start) // MINUTE_MS) for a in alerts} == {SPIKE, OUTAGE}
