"""A/B experiments on the real stack: a Taobao slice (with seeded synthetic signals) replayed through
Kafka, the job, Redis, with two experiments for every user and the exposures a site would send
(``replay.exposures``); one job run shared by every assertion.

- ``aa``: an A/A experiment (nothing in the stream depends on the variant): the report finds no
  significant difference in conversion or revenue per session, and no sample-ratio mismatch;
- ``planted``: the treatment's users buy once more with probability 3 %: the report detects it;
- the in-stream counts are the replay's (every exposed user, once, under the assigned variant);
- a user's assignment is served by the reader, the HTTP API and in the profile; the report CLI
  prints what the library computes;
- malformed exposures (no variant, an unknown experiment) are dead letters with their reason,
  and the job finishes.
"""

from __future__ import annotations

import subprocess
import time

import httpx
import orjson
import pytest
from rich.console import Console

from personalization.core.experiments import EXPOSURE, report
from personalization.pipelines.main import run_job
from personalization.replay.exposures import Planted, with_exposures
from personalization.replay.producer import RawRecord, produce, produce_raw, replay_events
from personalization.serving.api import api_process
from personalization.serving.experiments import as_record, experiment_report, render
from personalization.serving.reader import ProfileReader
from tests.support import PZ, dead_letters, free_port, isolated_settings, write_config

SLICE = 15_000
WINDOW = {"start": "2017-11-25T00:00:00Z", "end": "2017-12-04T00:00:00Z"}
EXPERIMENTS = [
    {"name": "aa", "variants": [{"name": "a1"}, {"name": "a2"}], **WINDOW},
    {"name": "planted", "variants": [{"name": "control"}, {"name": "treatment"}], **WINDOW},
]
PLANTED = Planted("planted", "treatment", 0.03, seed=11)
MALFORMED = [
    ({"event_id": "bad-1", "experiment": "aa"}, "schema_violation", "variant"),
    ({"event_id": "bad-2", "experiment": "nope", "variant": "a1"}, "unknown_experiment", "'nope' is not configured"),
]


@pytest.fixture(scope="module")
def run(stack, datasets, tmp_path_factory):
    settings = isolated_settings(tmp_path_factory.mktemp("experiments"), experiments=EXPERIMENTS)
    experiments = list(settings.experiment_map().values())
    events = list(with_exposures(replay_events("taobao", augmented=True, seed=7, limit=SLICE), experiments, PLANTED))
    produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    ts = events[0]["ts"]
    produce_raw([RawRecord(orjson.dumps({"schema_version": 1, "event_type": EXPOSURE, "ts": ts, "user_id": "u-bad",
                                         **fields}), None, ts) for fields, _, _ in MALFORMED],
                settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    started = time.monotonic()
    run_job(settings)
    print(f"job over {len(events):,} events: {time.monotonic() - started:.1f} s")
    return settings, events


def test_a_a_experiment_on_real_data_shows_no_significant_difference(run) -> None:
    settings, _ = run
    rep = experiment_report(settings, "aa")
    (comparison,) = rep.comparisons
    Console(width=170).print(render(rep))
    assert all(t.users > 2_000 and t.converted_users > 20 for t in rep.totals), rep.totals
    assert comparison.conversion.p_value > 0.05
    assert comparison.conversion.interval[0] < 0 < comparison.conversion.interval[1]
    assert comparison.revenue_per_session.p_value > 0.05
    assert not rep.sample_ratio_mismatch and rep.srm_p_value > 0.01


def test_a_planted_effect_is_detected(run) -> None:
    settings, _ = run
    rep = experiment_report(settings, "planted")
    (comparison,) = rep.comparisons
    Console(width=170).print(render(rep))
    assert comparison.conversion.p_value < 0.001
    assert comparison.conversion.interval[0] > 0 and comparison.conversion.lift > 0.5
    assert not rep.sample_ratio_mismatch


def test_every_exposed_user_is_counted_once_under_the_assigned_variant(run) -> None:
    settings, events = run
    for name in settings.experiment_map():
        exposures = {e["user_id"]: e["variant"] for e in events if e.get("experiment") == name}
        records = ProfileReader.from_settings(settings).experiment_outcomes(name)
        assert len(records) == len(exposures)
        assert sorted(r["variant"] for r in records) == sorted(exposures.values())
        assert sum(r["mismatched"] for r in records) == 0
        planted = sum(1 for e in events if e["event_id"].startswith(f"planted-exp-{name}-"))
        buyers = {e["user_id"] for e in events if e["event_type"] == "purchase"}
        converted = sum(1 for r in records if r["purchases"])
        assert converted == len(buyers & exposures.keys()) and (planted == 0) == (name != "planted")


def test_assignments_are_served_by_the_reader_the_api_and_the_cli(run, tmp_path) -> None:
    settings, events = run
    user = next(e["user_id"] for e in events if e["event_type"] == "purchase")
    expected = {name: experiment.variant_of(user) for name, experiment in settings.experiment_map().items()}
    served = ProfileReader.from_settings(settings).experiments(user)
    assert {name: record["variant"] for name, record in served.items()} == expected
    assert all(record["exposed_at"] is not None for record in served.values())
    config = write_config(settings, tmp_path / "config.yaml")
    with api_process(config, free_port(), env={settings.api.keys_env: "k"}) as url:
        body = httpx.get(f"{url}/v1/users/{user}/experiments", headers={"X-API-Key": "k"}).json()
    assert body["experiments"] == served
    out = subprocess.run([*PZ, "experiment-report", "planted", "--json", "--config", str(config)],
                         check=True, capture_output=True, text=True).stdout
    assert orjson.loads(out) == orjson.loads(orjson.dumps(as_record(experiment_report(settings, "planted"))))
    missing = subprocess.run([*PZ, "experiment-report", "nope", "--config", str(config)], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "'nope' is not configured" in missing.stderr


def test_malformed_exposures_are_dead_letters_with_their_reason(run) -> None:
    settings, _ = run
    letters = {orjson.loads(letter.value)["event_id"]: letter for letter in dead_letters(settings)}
    for fields, reason, detail in MALFORMED:
        letter = letters[fields["event_id"]]
        assert letter.reason == reason and detail in letter.detail


def test_the_report_is_a_function_of_the_records(run) -> None:
    """The library's report over the records read back equals the CLI's (no hidden state)."""
    settings, _ = run
    experiment = settings.experiment_map()["aa"]
    records = ProfileReader.from_settings(settings).experiment_outcomes("aa")
    assert report(experiment, records) == experiment_report(settings, "aa")
