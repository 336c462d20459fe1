"""Consent, revocation and erasure end to end: one unbounded run of the real job on real Taobao
events (one partition, so the input order is the order written), in phases.

1. The first 3,000 Taobao events (seeded synthetic signals). User D states ``denied`` on every
   event; user R revokes at its fourth event and sends more without a consent field. A last
   sentinel event marks the end of the phase.
2. A user A who has a profile, predictions, closed sessions, an audience membership and entries
   in the change stream is erased with the CLI (``serving.cli erase``).
3. Three more events of A without consent, then a grant and two more, then a filler event far
   ahead that moves the watermark past A's new session.

Asserted on Redis and on the topics Flink wrote (sessions, audit, no-consent).
"""

from __future__ import annotations

import collections
import subprocess
import sys

import pytest

from personalization.config.settings import REPO_ROOT
from personalization.pipelines.topics import read_topic
from personalization.replay.producer import produce, replay_events
from personalization.serving.erasure import user_keys
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import changes_key, connect, members_key
from tests.support import isolated_settings, sessions_of, start_job, wait_until, write_config

EVENTS = 3_000
REVOKE_AT = 3  # R's events before its revocation (the fourth event revokes)
REQUEST = "erase-req-1"


def _event(user: str, n: int, ts: int, consent: str | None = None) -> dict:
    event = {"schema_version": 1, "event_id": f"{user}-x{n}", "event_type": "product_view", "ts": ts,
             "user_id": user, "item_id": "1", "category_id": "2", "source": "test"}
    return {**event, "consent": {"personalization": consent}} if consent else event


def _phase_one() -> tuple[list[dict], str, str]:
    events = list(replay_events("taobao", augmented=True, seed=11, limit=EVENTS))
    per_user = collections.Counter(e["user_id"] for e in events)
    denied, revoked = [u for u, n in per_user.most_common() if 4 <= n <= 12][:2]
    seen: collections.Counter = collections.Counter()
    for event in events:
        user = event["user_id"]
        if user == denied:
            event["consent"] = {"personalization": "denied"}
        elif user == revoked:
            seen[user] += 1
            if seen[user] == REVOKE_AT + 1:
                event["consent"] = {"personalization": "denied"}
    return events, denied, revoked


def _traces(client, settings, user: str) -> list[str]:
    """Everything in Redis under the run's prefix that belongs to or names ``user``."""
    prefix, found = settings.redis.key_prefix, []
    found += [k for k in user_keys(prefix, user) if client.exists(k)]
    found += [k.decode() for k in client.scan_iter(match=members_key(prefix, "*")) if client.sismember(k, user)]
    found += [f"stream entry {i!r}" for i, f in client.xrange(changes_key(prefix)) if f[b"user_id"] == user.encode()]
    for pattern in (f"{prefix}:*{{{user}}}*", f"{prefix}:*:{user}"):  # any other key naming the user
        found += [k.decode() for k in client.scan_iter(match=pattern)]
    return sorted(set(found))


@pytest.fixture(scope="module")
def run(stack, datasets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("consent")
    settings = isolated_settings(tmp, kafka={"bounded": False, "topics": {"partitions": 1}},
                                 time={"session_gap": "30s", "idle_timeout": "1h"},
                                 privacy={"without_consent": "route"}, flink={"restart_attempts": 0})
    config = write_config(settings, tmp / "job.yaml")
    topics, bootstrap = settings.kafka.topics, settings.kafka.bootstrap_servers
    redis, reader = connect(settings.redis), ProfileReader.from_settings(settings)
    events, denied, revoked = _phase_one()
    end = max(e["ts"] for e in events)
    client = start_job(settings)
    try:
        produce([*events, _event("sentinel", 0, end)], bootstrap, topics.events, progress=False)
        wait_until(lambda: reader.get("sentinel"), 180, "the end of phase 1")

        def erasable() -> str | None:
            members = {m.decode() for k in redis.scan_iter(match=members_key(settings.redis.key_prefix, "*"))
                       for m in redis.smembers(k)}
            streamed = {f[b"user_id"].decode() for _, f in redis.xrange(changes_key(settings.redis.key_prefix))}
            return next((u for u in sorted(members & streamed) if u not in (denied, revoked)
                         and reader.predictions(u) and reader.get(u)["sessions_closed"] >= 1), None)

        erased = wait_until(erasable, 60, "a user with a profile, predictions, sessions and segments")
        before = {"traces": _traces(redis, settings, erased), "profile": reader.get(erased),
                  "sessions": sessions_of(settings), "no_consent": read_topic(settings, topics.no_consent)}
        cli = subprocess.run([sys.executable, "-m", "personalization.serving.cli", "--config", str(config),
                              "erase", erased, "--request-id", REQUEST],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        audit = wait_until(lambda: read_topic(settings, topics.audit, 500), 60, "the audit record")
        wait_until(lambda: not _traces(redis, settings, erased), 30, f"every Redis key of {erased} gone")

        produce([_event(erased, n, end + 1_000 * n) for n in (1, 2, 3)], bootstrap, topics.events, progress=False)
        wait_until(lambda: len([r for r in read_topic(settings, topics.no_consent, 500)
                                if r["event"]["user_id"] == erased]) == 3, 60, "3 refused events of the erased user")
        after_refused = _traces(redis, settings, erased)

        produce([_event(erased, 4, end + 10_000, "granted"), _event(erased, 5, end + 11_000),
                 _event(erased, 6, end + 12_000), _event("filler", 0, end + 120_000)],
                bootstrap, topics.events, progress=False)
        fresh = wait_until(lambda: (p := reader.get(erased)) and p["events_total"] == 3 and p, 60,
                           "the fresh profile after the grant")
        sessions = wait_until(lambda: (s := sessions_of(settings)) and any(
            r["user_id"] == erased and r["start"] == end + 10_000 for r in s) and s, 60, "the fresh session")
        assert not client.get_job_execution_result().done(), "the job stopped"
        return {"settings": settings, "events": events, "denied": denied, "revoked": revoked, "erased": erased,
                "end": end, "before": before, "audit": audit, "after_refused": after_refused, "fresh": fresh,
                "sessions": sessions, "no_consent": read_topic(settings, topics.no_consent),
                "reader": reader, "redis": redis}
    finally:
        client.cancel().result()


def test_events_with_consent_denied_are_not_profiled_and_are_routed(run):
    denied, reader = run["denied"], run["reader"]
    theirs = [e for e in run["events"] if e["user_id"] == denied]
    assert reader.get(denied) is None and reader.predictions(denied) is None
    assert _traces(run["redis"], run["settings"], denied) == []
    assert [s for s in run["sessions"] if s["user_id"] == denied] == []
    routed = [r for r in run["no_consent"] if r["event"]["user_id"] == denied]
    assert sorted(r["event"]["event_id"] for r in routed) == sorted(e["event_id"] for e in theirs)
    assert {r["reason"] for r in routed} == {"denied"}


def test_a_revocation_stops_profiling_from_that_event_on(run):
    revoked = run["revoked"]
    theirs = [e for e in run["events"] if e["user_id"] == revoked]
    kept, refused = theirs[:REVOKE_AT], theirs[REVOKE_AT:]
    profile = run["reader"].get(revoked)
    assert profile["events_total"] == REVOKE_AT and profile["last_seen"] == kept[-1]["ts"]
    routed = [r for r in run["no_consent"] if r["event"]["user_id"] == revoked]
    assert [r["event"]["event_id"] for r in routed] == [e["event_id"] for e in refused]
    assert {r["reason"] for r in routed} == {"denied"}
    # No session of the user holds an event from the revocation on (its timers do nothing since).
    assert all(s["end"] < refused[0]["ts"] for s in run["sessions"] if s["user_id"] == revoked)


def test_erasure_removes_every_key_and_is_confirmed_on_the_audit_topic(run):
    erased, prefix = run["erased"], run["settings"].redis.key_prefix
    before = run["before"]["traces"]
    assert f"{prefix}:{{{erased}}}:profile" in before and f"{prefix}:{{{erased}}}:predictions" in before
    assert any(":members" in t for t in before) and any(t.startswith("stream entry") for t in before)
    [record] = run["audit"]
    assert record["request_id"] == REQUEST and record["user_id"] == erased
    assert record["state_cleared"] is True and record["redis_keys_deleted"] == len(before)
    assert record["erased_at"] >= record["requested_at"]


def test_later_events_without_a_grant_recreate_nothing(run):
    erased = run["erased"]
    assert run["after_refused"] == []
    routed = [r for r in run["no_consent"] if r["event"]["user_id"] == erased]
    assert [r["event"]["event_id"] for r in routed] == [f"{erased}-x{n}" for n in (1, 2, 3)]
    assert {r["reason"] for r in routed} == {"erased"}
    # No session after the erasure holds the pre-erasure events: the user's old timers did nothing.
    old = [s for s in run["before"]["sessions"] if s["user_id"] == erased]
    new = [s for s in run["sessions"] if s["user_id"] == erased and s not in old]
    assert new and all(s["start"] >= run["end"] + 10_000 for s in new)


def test_a_grant_after_the_erasure_starts_a_fresh_profile(run):
    fresh, end = run["fresh"], run["end"]
    assert (fresh["events_total"], fresh["first_seen"], fresh["last_seen"]) == (3, end + 10_000, end + 12_000)
    assert fresh["counts"] == {"product_view": 3} and fresh["sessions_closed"] <= 1
    assert run["before"]["profile"]["events_total"] > 0  # the old profile is not carried over
    session = next(s for s in run["sessions"] if s["user_id"] == run["erased"] and s["start"] == end + 10_000)
    assert session["event_count"] == 3
