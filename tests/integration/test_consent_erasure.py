"""Consent, revocation and erasure end to end: one unbounded run of the real job on real Taobao
events (one partition, so the input order is the order written), in phases.

1. The first 3,000 Taobao events (seeded synthetic signals). User D states ``denied`` on every
   event; user R revokes at its fourth event and sends more without a consent field. A last
   sentinel event marks the end of the phase.
2. A user A who has a profile, predictions, closed sessions, an audience membership and entries
   in the change stream is erased with the CLI (``pz erase``).
3. Three more events of A without consent, then a grant and two more, then a filler event far
   ahead that moves the watermark past A's new session.

Identity stitching meets consent and erasure (``core.identity``), in the same phases: in phase 1
an anonymous visitor V sends three events; an anonymous id D sends two events, a denial, one
more, a grant and two more, then logs in as ``user-d``; an anonymous id L sends two events, logs
in as ``user-l`` and sends one more as the user. In phase 2 V (before any login) and ``user-l``
are erased with the CLI. In phase 3 V logs in as ``user-v``, L sends an anonymous event, then
``user-l`` and L each state a grant.

Asserted on Redis and on the topics Flink wrote (sessions, audit, no-consent).
"""

from __future__ import annotations

import collections
import subprocess

import pytest

from personalization.config.settings import REPO_ROOT
from personalization.topics.records import read_topic
from personalization.replay.producer import produce, replay_events
from personalization.serving.erasure import user_keys
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import (
    alias_key, changes_key, connect, encode_id, members_key_pattern, predictions_key, profile_key,
)
from tests.support import PZ, privacy_run_settings, sessions_of, start_job, wait_until, write_config

EVENTS = 3_000
REVOKE_AT = 3  # R's events before its revocation (the fourth event revokes)
REQUEST = "erase-req-1"
V, D, L = "anon-v", "anon-d", "anon-l"  # anonymous ids (see the module docstring)
ERASE_V, ERASE_L = "erase-anon-v", "erase-user-l"


def _event(user: str | None, n: int, ts: int, consent: str | None = None, anonymous: str | None = None) -> dict:
    event = {"schema_version": 1, "event_id": f"{user or anonymous}-x{n}", "event_type": "product_view", "ts": ts,
             "item_id": "1", "category_id": "2", "source": "test"}
    event |= {"user_id": user} if user else {}
    event |= {"anonymous_id": anonymous} if anonymous else {}
    return {**event, "consent": {"personalization": consent}} if consent else event


def _identities(end: int) -> list[dict]:
    """Phase 1 of V, D and L (timestamps just before the end of the Taobao events)."""
    at = end - 100
    return [*(_event(None, n, at + n, anonymous=V) for n in range(3)),
            _event(None, 0, at, anonymous=D), _event(None, 1, at + 1, anonymous=D),
            _event(None, 2, at + 2, "denied", anonymous=D), _event(None, 3, at + 3, anonymous=D),
            _event(None, 4, at + 4, "granted", anonymous=D), _event(None, 5, at + 5, anonymous=D),
            _event("user-d", 6, at + 6, anonymous=D),
            _event(None, 0, at, anonymous=L), _event(None, 1, at + 1, anonymous=L),
            _event("user-l", 2, at + 2, anonymous=L), _event("user-l", 3, at + 3)]


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
    found += [k.decode() for k in client.scan_iter(match=members_key_pattern(prefix)) if client.sismember(k, user)]
    found += [f"stream entry {i!r}" for i, f in client.xrange(changes_key(prefix)) if f[b"user_id"] == user.encode()]
    for pattern in (f"{prefix}:*{{{encode_id(user)}}}*", f"{prefix}:*:{encode_id(user)}"):  # any other key naming it
        found += [k.decode() for k in client.scan_iter(match=pattern)]
    return sorted(set(found))


@pytest.fixture(scope="module")
def run(stack, datasets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("consent")
    settings = privacy_run_settings(tmp)
    config = write_config(settings, tmp / "job.yaml")
    topics, bootstrap = settings.kafka.topics, settings.kafka.bootstrap_servers
    redis, reader = connect(settings.redis), ProfileReader.from_settings(settings)
    events, denied, revoked = _phase_one()
    end = max(e["ts"] for e in events)
    total = lambda user: (reader.get(user) or {}).get("events_total")

    def erase(user: str, request: str) -> None:
        cli = subprocess.run([*PZ, "erase", user, "--request-id", request, "--config", str(config)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr

    client = start_job(settings)
    try:
        produce([*events, *_identities(end), _event("sentinel", 0, end)], bootstrap, topics.events, progress=False)
        wait_until(lambda: reader.get("sentinel"), 180, "the end of phase 1")
        wait_until(lambda: (total(V), total("user-d"), total("user-l")) == (3, 3, 4), 60, "V, D and L profiled")
        identities = {"V": _traces(redis, settings, V), "user-l": reader.get("user-l"),
                      "L": _traces(redis, settings, L), "user-d": reader.get("user-d")}

        def erasable() -> str | None:
            members = {m.decode() for k in redis.scan_iter(match=members_key_pattern(settings.redis.key_prefix))
                       for m in redis.smembers(k)}
            streamed = {f[b"user_id"].decode() for _, f in redis.xrange(changes_key(settings.redis.key_prefix))}
            return next((u for u in sorted(members & streamed) if u not in (denied, revoked)
                         and reader.predictions(u) and reader.get(u)["sessions_closed"] >= 1), None)

        erased = wait_until(erasable, 60, "a user with a profile, predictions, sessions and segments")
        before = {"traces": _traces(redis, settings, erased), "profile": reader.get(erased),
                  "sessions": sessions_of(settings), "no_consent": read_topic(settings, topics.no_consent)}
        erase(erased, REQUEST)
        audit = wait_until(lambda: read_topic(settings, topics.audit, 500), 60, "the audit record")
        wait_until(lambda: not _traces(redis, settings, erased), 30, f"every Redis key of {erased} gone")
        erase(V, ERASE_V)
        erase("user-l", ERASE_L)
        audits = wait_until(lambda: (r := read_topic(settings, topics.audit, 500)) and len(r) == 3 and r, 60,
                            "the audit records of V and user-l")
        wait_until(lambda: not any(_traces(redis, settings, who) for who in (V, L, "user-l")), 30,
                   "every Redis key of V, L and user-l gone")
        identities["erased"] = {who: _traces(redis, settings, who) for who in (V, L, "user-l")}

        produce([*(_event(erased, n, end + 1_000 * n) for n in (1, 2, 3)),
                 _event("user-v", 0, end + 1_000, anonymous=V), _event(None, 4, end + 1_000, anonymous=L)],
                bootstrap, topics.events, progress=False)
        wait_until(lambda: len([r for r in read_topic(settings, topics.no_consent, 500)
                                if r["event"]["user_id"] == erased]) == 3, 60, "3 refused events of the erased user")
        wait_until(lambda: any(r["event"].get("anonymous_id") == L for r in read_topic(settings, topics.no_consent, 500)),
                   60, "the refused event of L")
        after_refused = _traces(redis, settings, erased)

        produce([_event(erased, 4, end + 10_000, "granted"), _event(erased, 5, end + 11_000),
                 _event(erased, 6, end + 12_000), _event("user-l", 5, end + 10_000, "granted"),
                 _event(None, 6, end + 10_000, "granted", anonymous=L), _event("filler", 0, end + 120_000)],
                bootstrap, topics.events, progress=False)
        fresh = wait_until(lambda: (p := reader.get(erased)) and p["events_total"] == 3 and p, 60,
                           "the fresh profile after the grant")
        wait_until(lambda: (total("user-v"), total("user-l"), total(L)) == (1, 1, 1), 60, "user-v, user-l and L")
        identities["later"] = {who: reader.get(who) for who in ("user-v", "user-l", L)}
        identities["audits"] = audits
        sessions = wait_until(lambda: (s := sessions_of(settings)) and any(
            r["user_id"] == erased and r["start"] == end + 10_000 for r in s) and s, 60, "the fresh session")
        assert not client.get_job_execution_result().done(), "the job stopped"
        return {"settings": settings, "events": events, "denied": denied, "revoked": revoked, "erased": erased,
                "end": end, "before": before, "audit": audit, "after_refused": after_refused, "fresh": fresh,
                "identities": identities,
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
    assert profile_key(prefix, erased) in before and predictions_key(prefix, erased) in before
    assert any(":members" in t for t in before) and any(t.startswith("stream entry") for t in before)
    [record] = run["audit"]  # read before V and user-l were erased
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


def test_an_anonymous_visitor_erased_before_login_leaves_nothing_and_a_later_link_merges_nothing_old(run):
    ids, prefix = run["identities"], run["settings"].redis.key_prefix
    assert profile_key(prefix, V) in ids["V"]
    [record] = [r for r in ids["audits"] if r["request_id"] == ERASE_V]
    assert record["user_id"] == V and record["state_cleared"] is True
    assert record["redis_keys_deleted"] >= len(ids["V"]) and ids["erased"][V] == []
    user_v = ids["later"]["user-v"]  # the login after the erasure: the link event alone
    assert (user_v["events_total"], user_v["first_seen"], user_v["anonymous_ids"]) == (1, run["end"] + 1_000, [V])


def test_an_anonymous_id_that_denied_consent_merges_nothing_from_the_denial_on(run):
    at = run["end"] - 100
    user_d = run["identities"]["user-d"]  # the two events after the grant, and the link
    assert (user_d["events_total"], user_d["first_seen"], user_d["anonymous_ids"]) == (3, at + 4, [D])
    routed = [r for r in run["no_consent"] if r["event"].get("anonymous_id") == D]
    assert [(r["event"]["event_id"], r["reason"]) for r in routed] == [(f"{D}-x2", "denied"), (f"{D}-x3", "denied")]


def test_erasing_a_user_forgets_their_stitched_anonymous_id(run):
    ids, prefix = run["identities"], run["settings"].redis.key_prefix
    assert ids["user-l"]["events_total"] == 4 and ids["user-l"]["anonymous_ids"] == [L]
    assert alias_key(prefix, L) in ids["L"]
    [record] = [r for r in ids["audits"] if r["request_id"] == ERASE_L]
    assert record["user_id"] == "user-l" and record["state_cleared"] is True
    assert ids["erased"] == {V: [], L: [], "user-l": []}
    # L's next event is no longer re-keyed to user-l: refused under L, which was erased too
    [refused] = [r for r in run["no_consent"] if r["event"].get("anonymous_id") == L]
    assert (refused["event"]["user_id"], refused["reason"]) == (L, "erased")
    # grants start fresh profiles, each on its own: the link is not resurrected
    later = ids["later"]
    assert (later["user-l"]["events_total"], later["user-l"]["anonymous_ids"]) == (1, [])
    assert (later[L]["user_id"], later[L]["events_total"], later[L]["first_seen"]) == (L, 1, run["end"] + 10_000)
