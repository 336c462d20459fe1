"""Recommendations in the job (core.recommend.stream via operators.recommend) on the real stack:
a real JD slice through Kafka (one partition: the input order is the order written), the job with
recommendations on, Redis.

- every user's ``{<user>}:recommendations`` answers their last product view, cart or purchase,
  with version = their number of such events, at most ``top_n`` items, none they bought, at most
  ``max_per_category`` per category, each with its source and the model version;
- restore: SIGKILL mid-stream after a checkpoint that completed once recommendations were written,
  restore from it, read the rest: every recommendations key equals the uninterrupted run's;
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

from personalization.config.settings import REPO_ROOT
from personalization.pipelines.control import stop_with_savepoint
from personalization.serving.api import api_process
from personalization.serving.reader import ProfileReader
from tests.integration.test_learning import _all_read, _checkpoint_number
from tests.support import PZ, free_port, isolated_settings, latest_checkpoint, redis_state, replayed_run, start_job, wait_until, \
    write_config

SLICE = 8_000
MEANINGFUL = {"product_view", "favorite", "add_to_cart", "purchase"}
ON = {"enabled": True}
ONE_PARTITION = {"topics": {"partitions": 1}}


@pytest.fixture(scope="module")
def baseline(stack, datasets, tmp_path_factory):
    settings, events = replayed_run(tmp_path_factory.mktemp("reco"), seed=7, limit=SLICE, dataset="jd",
                                    augmented=False, kafka=ONE_PARTITION, recommendations=ON,
                                    learning={"enabled": False})
    return settings, events


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
    sources = Counter()
    for user, reco in found.items():
        items = [r["item"] for r in reco["items"]]
        assert reco["version"] == requests[user]
        # empty only for a user whose one item nobody co-viewed yet (no cold-start fallback in the job)
        assert len(items) <= cfg.top_n and len(set(items)) == len(items)
        assert not set(items) & bought[user]
        per_category = Counter(category[i] for i in items if i in category)
        assert max(per_category.values(), default=0) <= cfg.max_per_category, (user, reco)
        assert reco["model_version"].startswith("coview-knn@")
        sources.update(r["source"] for r in reco["items"])
    assert sum(1 for reco in found.values() if reco["items"]) > 0.8 * len(found)
    assert sources["co-view"] > 0 and sources["recent"] > 0, sources
    assert any(bought[user] for user in found)   # the exclusion was exercised


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
    # (barriers are aligned), and the item side writes Redis before it takes the next record
    wait_until(lambda: _all_read(settings), 300, "the restored job to read and checkpoint every event")
    stop_with_savepoint(client, (tmp_path / "stopped").as_uri())
    assert _recommendations(settings) == expected


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
