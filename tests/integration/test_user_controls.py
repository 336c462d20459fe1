"""User controls end to end (docs/privacy.md "User controls"): one unbounded run of the real job on real
Taobao events (one partition, so the input order is the order written), in phases.

1. The first 2,000 Taobao events (seeded synthetic signals) and a sentinel; two users R and O
   with a profile, predictions, audience memberships and entries in the change stream are
   picked.
2. R is reset with the CLI (``pz control reset``), O opts out through the HTTP API
   (``POST /v1/users/<id>/controls/opt-out``, a real API process).
3. Two more events of each, and a sentinel; then O opts in with the CLI, sends one more event,
   and a last sentinel.

Asserted on Redis and on the topics Flink wrote (audit, no-consent, the change stream).
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from personalization.config.settings import DEFAULT_RULES, REPO_ROOT
from personalization.core.rules import RuleSet
from personalization.topics.records import read_topic
from personalization.replay.producer import produce, replay_events
from personalization.serving.api import api_process
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import changes_key, connect, members_key, predictions_key, profile_key
from tests.support import PZ, free_port, privacy_run_settings, start_job, wait_until, write_config

EVENTS = 2_000
KEY = "controls-test-key"


def _event(user: str, n: int, ts: int, consent: str | None = None) -> dict:
    event = {"schema_version": 1, "event_id": f"{user}-c{n}", "event_type": "product_view", "ts": ts, "user_id": user,
             "item_id": "1", "category_id": "2", "source": "test"}
    return {**event, "consent": {"personalization": consent}} if consent else event


SEGMENTS = [segment.name for segment in RuleSet.load(DEFAULT_RULES).segments]


def _memberships(redis, prefix: str, user: str) -> list[str]:
    """The user's audience sets (by the rules' segment names: no SCAN of a shared keyspace)."""
    return [s for s in SEGMENTS if redis.sismember(members_key(prefix, s), user)]


def _changes(redis, prefix: str, user: str) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in redis.xrange(changes_key(prefix))
            if fields[b"user_id"] == user.encode()]


@pytest.fixture(scope="module")
def run(stack, datasets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("controls")
    settings = privacy_run_settings(tmp)
    config = write_config(settings, tmp / "job.yaml")
    topics, bootstrap, prefix = settings.kafka.topics, settings.kafka.bootstrap_servers, settings.redis.key_prefix
    redis, reader = connect(settings.redis), ProfileReader.from_settings(settings)
    events = list(replay_events("taobao", augmented=True, seed=12, limit=EVENTS))
    end = max(e["ts"] for e in events)
    audits = lambda n: (r := read_topic(settings, topics.audit, 500)) and len(r) == n and r

    def cli(*args: str) -> dict:
        done = subprocess.run([*PZ, *args, "--config", str(config)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    client = start_job(settings)
    try:
        produce([*events, _event("sentinel-1", 0, end)], bootstrap, topics.events, progress=False)
        wait_until(lambda: reader.get("sentinel-1"), 180, "the end of phase 1")

        def candidates() -> list[str] | None:
            streamed = {f[b"user_id"].decode() for _, f in redis.xrange(changes_key(prefix))}
            found = [u for u in sorted(streamed) if _memberships(redis, prefix, u) and reader.predictions(u)]
            return found[:2] if len(found) >= 2 else None

        reset_user, opted_out = wait_until(candidates, 60, "two users with segments, stream entries and predictions")
        before = {u: {"profile": reader.get(u), "memberships": _memberships(redis, prefix, u),
                      "changes": _changes(redis, prefix, u)} for u in (reset_user, opted_out)}
        cli("control", "reset", reset_user, "--request-id", "reset-1")
        with api_process(config, free_port(), env={"PZ_API_KEYS": KEY}) as url:
            refused = httpx.post(f"{url}/v1/users/{opted_out}/controls/opt-out", timeout=30)
            bad = httpx.post(f"{url}/v1/users/{opted_out}/controls/forget-me", headers={"X-API-Key": KEY}, timeout=30)
            accepted = httpx.post(f"{url}/v1/users/{opted_out}/controls/opt-out", headers={"X-API-Key": KEY},
                                  timeout=30)
        confirmed = wait_until(lambda: audits(2), 60, "the audit records of the reset and the opt-out")
        wait_until(lambda: not reader.predictions(reset_user) and not reader.predictions(opted_out)
                   and reader.get(opted_out) is None, 30, "predictions and the opted-out profile gone")
        after = {u: {"profile": reader.get(u), "memberships": _memberships(redis, prefix, u),
                     "changes": _changes(redis, prefix, u)} for u in (reset_user, opted_out)}

        produce([_event(reset_user, 1, end + 1_000), _event(reset_user, 2, end + 2_000),
                 _event(opted_out, 1, end + 1_000), _event(opted_out, 2, end + 2_000),
                 _event("sentinel-2", 0, end + 2_000)], bootstrap, topics.events, progress=False)
        wait_until(lambda: reader.get("sentinel-2"), 60, "the end of phase 3's first part")
        resumed = wait_until(lambda: (p := reader.get(reset_user)) and p["events_total"] == 2 and p, 30,
                             "the reset user's new events")
        while_out = {"profile": reader.get(opted_out), "keys": redis.exists(profile_key(prefix, opted_out),
                                                                            predictions_key(prefix, opted_out))}
        cli("control", "opt-in", opted_out, "--request-id", "opt-in-1")
        wait_until(lambda: audits(3), 60, "the audit record of the opt-in")
        produce([_event(opted_out, 3, end + 3_000), _event("sentinel-3", 0, end + 3_000)], bootstrap, topics.events,
                progress=False)
        back = wait_until(lambda: reader.get("sentinel-3") and reader.get(opted_out), 60, "the opted-in user's event")
        assert not client.get_job_execution_result().done(), "the job stopped"
        return {"reset": reset_user, "opted_out": opted_out, "before": before, "after": after,
                "audits": read_topic(settings, topics.audit), "no_consent": read_topic(settings, topics.no_consent),
                "confirmed": confirmed, "http": (refused, bad, accepted), "resumed": resumed,
                "while_out": while_out, "back": back}
    finally:
        client.cancel().result()


def test_a_reset_clears_the_profile_and_its_segments_and_keeps_counting_versions(run):
    user, before, after = run["reset"], run["before"][run["reset"]], run["after"][run["reset"]]
    profile = after["profile"]
    assert before["profile"]["events_total"] > 0 and before["memberships"]
    assert profile["version"] > before["profile"]["version"]
    assert (profile["events_total"], profile["segments"], profile["top_categories"], profile["counts"]) == \
        (0, {}, [], {})
    assert after["memberships"] == []
    exits = after["changes"][len(before["changes"]):]
    assert {(c["action"], c["cause"]) for c in exits} == {("exit", '{"rule":"user.reset","features":{}}')}
    assert set(before["memberships"]) <= {c["segment"] for c in exits}
    assert [int(c["seq"]) for c in after["changes"]] == sorted(int(c["seq"]) for c in after["changes"])
    # consent kept: later events are profiled, from zero
    assert run["resumed"]["events_total"] == 2 and run["resumed"]["version"] > profile["version"]
    assert not [r for r in run["no_consent"] if r["event"]["user_id"] == user]


def test_an_opt_out_through_the_api_removes_the_profile_and_stops_profiling_until_an_opt_in(run):
    user, before, after = run["opted_out"], run["before"][run["opted_out"]], run["after"][run["opted_out"]]
    refused, bad, accepted = run["http"]
    assert refused.status_code == 401 and bad.status_code == 400
    assert accepted.status_code == 202 and accepted.json()["action"] == "opt_out"
    assert accepted.json()["user_id"] == user
    assert before["profile"] is not None and before["memberships"]
    assert after["profile"] is None and after["memberships"] == []
    exits = after["changes"][len(before["changes"]):]
    assert exits and {(c["action"], c["cause"]) for c in exits} == {("exit", '{"rule":"user.opt_out","features":{}}')}
    assert run["while_out"] == {"profile": None, "keys": 0}
    refused_events = [r for r in run["no_consent"] if r["event"]["user_id"] == user]
    assert [r["event"]["event_id"] for r in refused_events] == [f"{user}-c1", f"{user}-c2"]
    assert {r["reason"] for r in refused_events} == {"denied"}
    back = run["back"]  # after the opt-in: profiled again, on the reset state
    assert back["events_total"] == 1 and back["version"] > before["profile"]["version"]


def test_every_control_is_confirmed_on_the_audit_topic_by_its_request_id(run):
    audits = {r["request_id"]: r for r in run["audits"]}
    opt_out_id = run["http"][2].json()["request_id"]
    assert set(audits) == {"reset-1", opt_out_id, "opt-in-1"}
    assert (audits["reset-1"]["action"], audits["reset-1"]["user_id"], audits["reset-1"]["state_cleared"]) == \
        ("reset", run["reset"], True)
    assert (audits[opt_out_id]["action"], audits[opt_out_id]["state_cleared"]) == ("opt_out", True)
    assert audits["opt-in-1"]["action"] == "opt_in"
    assert all(r["done_at"] >= r["requested_at"] for r in audits.values())
