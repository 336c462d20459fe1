"""Recommendations in the job (core.recommend.stream via operators.recommend) on the real stack:
a real JD slice through Kafka (one partition: the input order is the order written), the job with
recommendations on, Redis.

- every user's ``{<user>}:recommendations`` answers their last product view, cart or purchase,
  with version = their number of such events, at most ``top_n`` items, none they bought, at most
  ``max_per_category`` per category, each with its source and the model version;
- frequency capping: users shown one of their recent items ``cap_impressions`` times (``impression``
  events planted before their last view) get it after every other item, and exactly the answer the
  core computes from the same ordered events in plain Python;
- restore: SIGKILL mid-stream after a checkpoint that completed once recommendations were written,
  restore from it, read the rest: every recommendations key equals the uninterrupted run's;
- erasure: an erased user's recommendations become a tombstone, the user's later events are not
  used until a grant, and the first answer after it recalls nothing of before; an anonymous visitor
  is answered under the anonymous id;
- ``pz recommendations <user>`` prints what the reader returns, and exits 1 for a user without any;
- the HTTP API serves them, key-less where ``api.public_reads`` opens them (and nothing else).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter, defaultdict

import httpx
import pytest

from personalization.config.settings import REPO_ROOT, Settings
from personalization.core.events import Event
from personalization.core.recommend.stream import InOrder, Recommendations
from personalization.pipelines.control import stop_with_savepoint
from personalization.pipelines.main import run_job
from personalization.replay.producer import produce, replay_events
from personalization.serving.api import api_process
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect, recommendations_key
from tests.integration.test_learning import _all_read, _checkpoint_number
from tests.support import PZ, free_port, isolated_settings, latest_checkpoint, redis_state, start_job, wait_until, \
    write_config

SLICE = 5_000  # enough for every check below with room (docs/recommendations.md, "Proof")
MEANINGFUL = {"product_view", "favorite", "add_to_cart", "purchase"}
ON = {"enabled": True}
ONE_PARTITION = {"topics": {"partitions": 1}}


@pytest.fixture(scope="module")
def baseline(stack, datasets, tmp_path_factory):
    """The JD slice with impressions planted (``with_impressions``), through the job."""
    settings = isolated_settings(tmp_path_factory.mktemp("reco"), kafka=ONE_PARTITION, recommendations=ON,
                                 learning={"enabled": False})
    events = with_impressions(list(replay_events("jd", augmented=False, seed=7, limit=SLICE)),
                              settings.recommendations.cap_impressions)
    produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    run_job(settings)
    return settings, events


CAPPED_USERS = 40


def with_impressions(events: list[dict], times: int) -> list[dict]:
    """Before the last meaningful event of the first ``CAPPED_USERS`` users with two different last
    items, ``times`` impressions of the earlier item (a strong ``recent`` candidate)."""
    last_two: dict[str, list[int]] = defaultdict(list)
    for n, e in enumerate(events):
        if e["event_type"] in MEANINGFUL and e.get("item_id"):
            last_two[e["user_id"]] = [*last_two[e["user_id"]][-1:], n]
    planted = {}
    for positions in last_two.values():
        if len(positions) == 2 and events[positions[0]]["item_id"] != events[positions[1]]["item_id"]:
            planted[positions[1]] = events[positions[0]]
        if len(planted) == CAPPED_USERS:
            break
    out = []
    for n, e in enumerate(events):
        if n in planted:
            out += [{"schema_version": 1, "event_id": f"impression-{k}-{e['event_id']}", "event_type": "impression",
                     "ts": e["ts"], "user_id": e["user_id"], "items": [planted[n]["item_id"]]} for k in range(times)]
        out.append(e)
    return out


def core_answers(settings: Settings, events: list[dict], *, impressions: bool = True) -> dict[str, Recommendations]:
    """Each user's newest answer as the core computes it in plain Python, in the input's order (the
    trending side's messages released once all are in: the slice is in time order, nothing late)."""
    job = InOrder(settings.recommendations.core(), settings.privacy.consent_default)
    answers = job.feed(Event.from_payload(e) for e in events if impressions or e["event_type"] != "impression")
    answers += job.release_all()
    return {reco.user: reco for reco in sorted(answers, key=lambda reco: reco.version)}


def _recommendations(settings) -> dict[str, object]:
    return {k: v for k, v in redis_state(settings).items() if k.endswith(":recommendations")}


def test_each_user_gets_a_bounded_diverse_top_n_without_purchases_with_source_and_version(baseline) -> None:
    settings, events = baseline
    cfg = settings.recommendations
    requests = Counter(e["user_id"] for e in events if e["event_type"] in MEANINGFUL and e.get("item_id"))
    bought = defaultdict(set)
    category = {e["item_id"]: e["category_id"] for e in events if e.get("item_id") and e.get("category_id")}
    for e in events:
        if e["event_type"] == "purchase":
            bought[e["user_id"]].add(e["item_id"])
    reader = ProfileReader.from_settings(settings)
    found = {user: reader.recommendations(user) for user in requests}
    assert all(found.values()) and len(found) > 100
    sources, contexts = Counter(), Counter()
    for user, reco in found.items():
        items = [r["item"] for r in reco["items"]]
        assert reco["version"] == requests[user]
        assert len(items) <= cfg.top_n and len(set(items)) == len(items)
        assert not set(items) & bought[user]
        per_category = Counter(category[i] for i in items if i in category)
        assert max(per_category.values(), default=0) <= cfg.max_per_category, (user, reco)
        assert reco["model_version"].startswith("coview-knn@")
        sources.update(r["source"] for r in reco["items"])
        contexts.update(r["context"].partition(":")[0] for r in reco["items"] if r["source"] == "trending")
        # what trends in the category context is of the answered item's category
        assert all(category.get(r["item"]) == category.get(reco["item"]) for r in reco["items"]
                   if r.get("context", "").startswith("category:")), (user, reco)
    assert sources["co-view"] > 0 and sources["recent"] > 0 and sources["trending"] > 0, sources
    # past the category: what trends among the users from the same referrer (JD's page labels), and on the site
    assert contexts["category"] > 0 and contexts["referrer"] > 0 and contexts["all"] > 0, contexts
    # cold start: an answer is empty only when nothing trends in the item's category either
    assert sum(1 for reco in found.values() if reco["items"]) > 0.95 * len(found)
    assert any(bought[user] for user in found)   # the exclusion was exercised


def test_every_users_answer_is_exactly_what_the_core_computes_from_the_ordered_input(baseline) -> None:
    settings, events = baseline
    reader = ProfileReader.from_settings(settings)
    expected = core_answers(settings, events)
    assert len(expected) > 100
    for user, reco in expected.items():
        found = reader.recommendations(user)
        assert (found["items"], found["version"]) == (reco.items, reco.version), user


def test_items_shown_without_a_click_go_last_exactly_as_the_core_computes(baseline) -> None:
    settings, events = baseline
    capped = {e["user_id"]: e["items"][0] for e in events if e["event_type"] == "impression"}
    assert len(capped) == CAPPED_USERS
    reader = ProfileReader.from_settings(settings)
    expected, uncapped = core_answers(settings, events), core_answers(settings, events, impressions=False)
    moved = 0
    for user, item in capped.items():
        found = [r["item"] for r in reader.recommendations(user)["items"]]
        assert found == [r["item"] for r in expected[user].items], user
        if item in found:
            assert found.index(item) == len(found) - 1, (user, item, found)
        plain = [r["item"] for r in uncapped[user].items]
        moved += item in plain and plain.index(item) < len(plain) - 1
    assert moved > CAPPED_USERS // 2   # without the impressions the item came earlier: the cap was exercised


def test_sigkill_then_restore_ends_with_the_uninterrupted_runs_recommendations(baseline, tmp_path) -> None:
    baseline_settings, events = baseline
    expected = _recommendations(baseline_settings)
    settings = isolated_settings(tmp_path, events_topic=baseline_settings.kafka.topics.events,
                                 kafka={"bounded": False, **ONE_PARTITION}, recommendations=ON,
                                 learning={"enabled": False}, flink={"checkpoint_interval": 1_000})
    job = subprocess.Popen([*PZ, "run", "--config", str(write_config(settings, tmp_path / "job.yaml"))],
                           cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _recommendations(settings), 240, "the first recommendations")
        after = _checkpoint_number(settings)
        wait_until(lambda: _checkpoint_number(settings) > after, 120, f"a checkpoint completed after chk-{after}")
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    versions = lambda recos: sum(int(r[b"version"]) for r in recos.values())
    assert versions(_recommendations(settings)) < versions(expected)   # killed mid-stream

    client = start_job(settings.with_overrides(flink={"savepoint_path": latest_checkpoint(settings.flink.checkpoint_dir)}))
    # every event read and covered by a completed checkpoint: every operator has processed it
    # (barriers are aligned), and the item side writes Redis before it takes the next record; the
    # drain then releases the trending side's last fills, as the end of the bounded run does
    wait_until(lambda: _all_read(settings), 300, "the restored job to read and checkpoint every event")
    stop_with_savepoint(client, (tmp_path / "stopped").as_uri(), drain=True)
    assert _recommendations(settings) == expected


def test_an_erased_user_gets_nothing_until_a_grant_and_then_nothing_recalled_a_visitor_is_answered(stack, tmp_path) -> None:
    # the item side writes its answers at once: trending fills would wait for a watermark that stands still here
    settings = isolated_settings(tmp_path, kafka={"bounded": False, **ONE_PARTITION}, learning={"enabled": False},
                                 recommendations={**ON, "blend_weights": {"knn": 1.0, "recent": 0.5, "trending": 0.0}})
    config = write_config(settings, tmp_path / "job.yaml")
    reader, redis = ProfileReader.from_settings(settings), connect(settings.redis)
    key = recommendations_key(settings.redis.key_prefix, "erased")
    at = 1_700_000_000_000

    def view(item: str, n: int, consent: str | None = None) -> dict:
        event = {"schema_version": 1, "event_id": f"erased-{n}", "event_type": "product_view", "ts": at + n * 1000,
                 "user_id": "erased", "item_id": item, "category_id": f"c-{item}"}
        return {**event, "consent": {"personalization": consent}} if consent else event

    client = start_job(settings)
    try:
        visitor = [{"schema_version": 1, "event_id": f"visitor-{n}", "event_type": "product_view", "ts": at + n,
                    "anonymous_id": "visitor", "item_id": item, "category_id": f"c-{item}"}
                   for n, item in enumerate(("p", "q"))]
        produce([*visitor, view("a", 0), view("b", 1), view("c", 2)], settings.kafka.bootstrap_servers,
                settings.kafka.topics.events, progress=False)
        before = wait_until(lambda: (r := reader.recommendations("erased")) and r["version"] == 3 and r, 240,
                            "the answer to the third view")
        assert {r["item"] for r in before["items"]} == {"a", "b"}
        # a visitor who never logged in: answered under the anonymous id, as the identity hop keyed it
        anonymous = wait_until(lambda: reader.recommendations("visitor"), 60, "the visitor's answer")
        assert (anonymous["version"], anonymous["item"], [r["item"] for r in anonymous["items"]]) == (2, "q", ["p"])
        # so that the tombstone found below is the recommender's (the user operator's keeps what it finds)
        redis.delete(key)
        cli = subprocess.run([*PZ, "erase", "erased", "--config", str(config)], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        wait_until(lambda: redis.hgetall(key) == {b"version": b"3"}, 120, "the recommender's tombstone")
        assert reader.recommendations("erased") is None and redis.pttl(key) > 0
        produce([view("d", 3), view("e", 4, consent="granted")], settings.kafka.bootstrap_servers,
                 settings.kafka.topics.events, progress=False)
        after = wait_until(lambda: reader.recommendations("erased"), 120, "the answer after the grant")
    finally:
        client.cancel().result()
    # d (no consent after the erasure) made no request; e did, numbered above the tombstone, and
    # neither a, b, c (forgotten) nor d (not used) is recalled
    assert (after["version"], after["item"]) == (4, "e")
    assert not {r["item"] for r in after["items"]} & {"a", "b", "c", "d"}, after


def test_the_cli_prints_what_the_reader_returns(baseline, tmp_path) -> None:
    settings, events = baseline
    user = next(e["user_id"] for e in reversed(events) if e["event_type"] == "product_view")
    config = write_config(settings, tmp_path / "cli.yaml")
    shown = subprocess.run([*PZ, "recommendations", user, "--config", str(config)], cwd=REPO_ROOT, check=True,
                           capture_output=True, text=True).stdout
    assert json.loads(shown) == ProfileReader.from_settings(settings).recommendations(user)
    missing = subprocess.run([*PZ, "recommendations", "nobody-at-all", "--config", str(config)], cwd=REPO_ROOT,
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no recommendations" in missing.stderr


def test_the_api_serves_them_publicly_and_nothing_else(baseline, tmp_path) -> None:
    settings, events = baseline
    user = next(e["user_id"] for e in reversed(events) if e["event_type"] == "product_view")
    expected = ProfileReader.from_settings(settings).recommendations(user)
    config = write_config(settings.with_overrides(api={"public_reads": ["recommendations"]}), tmp_path / "api.yaml")
    with api_process(config, free_port(), env={"PZ_API_KEYS": "reco-test-key"}) as url:
        path = f"{url}/v1/users/{user}"
        public = httpx.get(f"{path}/recommendations", timeout=30)
        unchanged = httpx.get(f"{path}/recommendations", headers={"If-None-Match": public.headers.get("ETag", "")},
                              timeout=30)
        profile = httpx.get(f"{path}/profile", timeout=30)
        unknown = httpx.get(f"{url}/v1/users/nobody-at-all/recommendations", timeout=30)
    assert public.status_code == 200 and public.json() == expected
    assert public.headers["ETag"] == f'"r{expected["version"]}"'
    assert unchanged.status_code == 304
    assert profile.status_code == 401   # only the recommendations are public
    assert unknown.status_code == 404 and unknown.json() == {"error": "no recommendations for this id"}
