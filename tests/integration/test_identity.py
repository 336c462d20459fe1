"""Identity stitching end to end, on real Taobao events through the real job (Kafka, Flink, Redis).

Eight Taobao users with five or more events become anonymous visitors who log in: their first
half of events carry only ``anonymous_id = anon-<user>``, the next one carries both ids (the
link), and of the rest every other one is anonymous again (re-keyed to the user), the others
carry the user id only. The stitched run is unbounded: the events before the first link are
read, the Redis keys and the sessions topic are checked, the rest is read and the job drained.
The baseline is a bounded run of the same events all carrying the user id from the start.

What may differ for a stitched user (and nothing else may): the profile's ``version`` (the
stitch is a step of its own; the anonymous profile's steps are not replayed) and
``anonymous_ids``; sessions the anonymous id emitted before the link stay in the topic under
it; the anonymous profile's segment changes (its exits with cause ``identity.merged``) and
the user's own changes (made at other times); model outputs (the trainer learns in another
order, and learns the anonymous events under both ids).
"""

from __future__ import annotations

from collections import Counter

import pytest

from personalization.pipelines.control import stop_with_savepoint
from personalization.pipelines.main import run_job
from personalization.replay.producer import produce, replay_events
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import alias_key, decode_id, profile_key
from tests.support import isolated_settings, redis_state, sessions_of, start_job, wait_until

SLICE = 4_000
STITCHED_USERS = 8
TIME = {"session_gap": "20s", "idle_timeout": "1h"}  # short sessions: some close before the links


def _anonymize(events: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """The events with eight users turned into anonymous visitors who log in; per user, their
    anonymous id and the link event."""
    per_user = Counter(e["user_id"] for e in events)
    chosen = [u for u in dict.fromkeys(e["user_id"] for e in events) if per_user[u] >= 5][:STITCHED_USERS]
    seen: Counter = Counter()
    links: dict[str, dict] = {}
    out = []
    for event in events:
        user = event["user_id"]
        if user not in chosen:
            out.append(event)
            continue
        n, k = seen[user], per_user[user] // 2
        seen[user] += 1
        anonymous = f"anon-{user}"
        if n < k or (n > k and (n - k) % 2):  # before the link, and every other one after it
            event = {**{f: v for f, v in event.items() if f != "user_id"}, "anonymous_id": anonymous}
        elif n == k:
            event = {**event, "anonymous_id": anonymous}
            links[user] = event
        out.append(event)
    return out, links


@pytest.fixture(scope="module")
def runs(stack, datasets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identity")
    plain_events = list(replay_events("taobao", augmented=True, seed=11, limit=SLICE))
    events, links = _anonymize(plain_events)
    assert len(links) == STITCHED_USERS

    plain = isolated_settings(tmp, time=TIME)
    produce(plain_events, plain.kafka.bootstrap_servers, plain.kafka.topics.events, progress=False)
    run_job(plain)

    stitched = isolated_settings(tmp, time=TIME, kafka={"bounded": False})
    reader = ProfileReader.from_settings(stitched)
    processed = lambda: sum(p["events_total"] for p in reader.all_profiles())
    cut = min(events.index(link) for link in links.values())
    client = start_job(stitched)
    try:
        produce(events[:cut], stitched.kafka.bootstrap_servers, stitched.kafka.topics.events, progress=False)
        wait_until(lambda: processed() == cut, 240, f"the {cut} events before the first link")
        before = {"redis": redis_state(stitched), "sessions": sessions_of(stitched), "events": events[:cut]}
        produce(events[cut:], stitched.kafka.bootstrap_servers, stitched.kafka.topics.events, progress=False)
        total = sum(p["events_total"] for p in ProfileReader.from_settings(plain).all_profiles())
        wait_until(lambda: processed() == total, 240, f"all {total} events")
    finally:
        stop_with_savepoint(client, (tmp / "drained").as_uri(), drain=True)
    return {"links": links, "before": before, "stitched": stitched, "plain": plain,
            "after": redis_state(stitched), "expected": redis_state(plain),
            "sessions": sessions_of(stitched), "plain_sessions": sessions_of(plain)}


def _profile(state: dict, user: str) -> dict | None:
    return state.get(profile_key("", user))  # keys relative to the run's prefix


def test_before_the_link_the_anonymous_ids_have_profiles_of_their_own(runs):
    state, early = runs["before"]["redis"], runs["before"]["events"]
    anonymous = Counter(e["anonymous_id"] for e in early if "anonymous_id" in e)
    assert anonymous  # some anonymous visitors were seen before the first link
    for user in runs["links"]:
        assert _profile(state, user) is None
        assert alias_key("", f"anon-{user}") not in state
    for anonymous_id, n in anonymous.items():
        profile = _profile(state, anonymous_id)
        assert profile[b"events_total"] == str(n).encode() and profile[b"anonymous_ids"] == b"[]"
    stitched_ids = {f"anon-{u}" for u in runs["links"]} | set(runs["links"])
    assert {s["user_id"] for s in runs["before"]["sessions"]} & stitched_ids <= set(anonymous)


def test_after_the_link_the_anonymous_profile_is_an_alias_of_the_users(runs):
    state = runs["after"]
    for user in runs["links"]:
        anonymous = f"anon-{user}"
        assert _profile(state, anonymous) is None
        assert state[alias_key("", anonymous)] == user.encode()
        assert _profile(state, user)[b"anonymous_ids"] == f'["{anonymous}"]'.encode()
    reader = ProfileReader.from_settings(runs["stitched"])
    user = next(iter(runs["links"]))
    assert reader.get(f"anon-{user}")["user_id"] == user  # readers that know the anonymous id


def test_merged_profiles_equal_the_run_with_the_user_id_from_the_start(runs):
    after, expected = runs["after"], runs["expected"]
    stitched = set(runs["links"])
    for user in stitched:
        merged, plain = dict(_profile(after, user)), dict(_profile(expected, user))
        for field in (b"version", b"anonymous_ids"):
            merged.pop(field), plain.pop(field)
        assert merged == plain, user
    profiles = lambda state: {k: v for k, v in state.items()
                              if k.endswith(":profile") and decode_id(k[2:].split("}")[0]) not in stitched}
    assert profiles(after) == profiles(expected)  # every other profile, version included
    assert len(profiles(expected)) > 1_500
    audiences = lambda state: {k: v for k, v in state.items() if k.endswith(":members")}
    assert audiences(after) == audiences(expected)  # no anonymous id left in an audience


def test_sessions_before_and_after(runs):
    stitched = set(runs["links"])
    anonymous_ids = {f"anon-{u}" for u in stitched}
    final = lambda sessions, users: {s["session_id"]: s for s in sessions if s["user_id"] in users}
    # the users' sessions end as in the run with the user id from the start
    assert final(runs["sessions"], stitched) == final(runs["plain_sessions"], stitched)
    # the anonymous ids' sessions emitted before the link stay, each before its link
    for session in runs["sessions"]:
        if session["user_id"] in anonymous_ids:
            assert session["start"] <= runs["links"][session["user_id"].removeprefix("anon-")]["ts"]
    # everyone else's sessions are the baseline's, record for record
    others = lambda sessions: [s for s in sessions if s["user_id"] not in stitched | anonymous_ids]
    assert others(runs["sessions"]) == others(runs["plain_sessions"])
    assert len(others(runs["plain_sessions"])) > 1_000
