"""State evolution: the next release adds a profile field, and restores this release's savepoint."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from personalization.config.settings import REPO_ROOT
from personalization.pipelines.control import stop_with_savepoint
from personalization.tools.monitor import FlinkRest
from personalization.replay.producer import produce
from personalization.serving.reader import ProfileReader
from tests.support import PZ, free_port, isolated_settings, start_job, wait_until, write_config

T = 1_511_658_000_000


def _click(event_id: str, user: str, ts: int) -> dict:
    return {"schema_version": 1, "event_id": event_id, "event_type": "click", "ts": ts, "user_id": user}


def _three_clicks(tmp_path):
    """Settings of a run of its own with two clicks of ann's and one of ben's on its events topic;
    the profile reader, and the number of events the profiles count."""
    settings = isolated_settings(tmp_path, kafka={"bounded": False})
    reader = ProfileReader.from_settings(settings)
    produce([_click("a1", "ann", T), _click("b1", "ben", T + 1_000), _click("a2", "ann", T + 2_000)],
            settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    return settings, reader, lambda: sum(p["events_total"] for p in reader.all_profiles())


def _next_release(tmp_path):
    """A copy of the project whose UserState gained a field in the middle, shown in the profile."""
    release = tmp_path / "release"
    shutil.copytree(REPO_ROOT / "personalization", release / "personalization",
                    ignore=shutil.ignore_patterns("__pycache__"))
    user_py = release / "personalization" / "core" / "user.py"
    source = user_py.read_text()
    patched = source.replace("    user_id: str\n", '    user_id: str\n    loyalty_tier: str = "new"\n', 1)
    patched = patched.replace('"user_id": state.user_id,', '"user_id": state.user_id,\n'
                              '            "loyalty_tier": state.loyalty_tier,', 1)
    assert patched.count("loyalty_tier") == 3, "the release patch no longer applies to core/user.py"
    user_py.write_text(patched)
    return release


def test_a_release_with_an_added_profile_field_restores_an_old_savepoint(stack, tmp_path):
    settings, reader, processed = _three_clicks(tmp_path)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    client = start_job(settings)
    wait_until(lambda: processed() == 3, 120, "the first three events")
    savepoint = stop_with_savepoint(client, (tmp_path / "savepoints").as_uri())
    assert "loyalty_tier" not in reader.get("ann")

    release = _next_release(tmp_path)
    produce([_click("a3", "ann", T + 3_000), _click("b2", "ben", T + 4_000)], bootstrap, topic, progress=False)
    with _release_job(release, settings.with_overrides(flink={"savepoint_path": savepoint}), tmp_path,
                      "next") as (rest, job_id):
        wait_until(lambda: processed() == 5, 120, "all five events")
        rest.stop(job_id, (tmp_path / "drained").as_uri(), drain=True)

    ann, ben = reader.get("ann"), reader.get("ben")
    assert (ann["loyalty_tier"], ann["events_total"], ann["first_seen"]) == ("new", 3, T)
    assert (ben["loyalty_tier"], ben["events_total"], ben["counts"]) == ("new", 2, {"click": 2})
    assert ann["sessions_closed"] == 1  # the restored open session was closed by the drain


def _previous_release(tmp_path):
    """A copy of the project that keeps user state as the releases before ``state.codec`` did: the
    ``UserState`` object itself in ``user-state-v1``, pickled by PyFlink."""
    release = tmp_path / "previous"
    shutil.copytree(REPO_ROOT / "personalization", release / "personalization",
                    ignore=shutil.ignore_patterns("__pycache__"))
    codec_py = release / "personalization" / "state" / "codec.py"
    signature = "def encode_user_state(value: UserState | Suppressed, parts: int | None = None) -> bytes:\n"
    source = codec_py.read_text()
    assert source.count(signature) == 1, "the previous-release patch no longer applies to state/codec.py"
    codec_py.write_text(source.replace(signature, signature + "    return value  # the object, pickled by PyFlink\n"))
    return release


@contextlib.contextmanager
def _release_job(release, settings, tmp_path, name: str):
    """The job of another release (a copy of the package) run by ``pz run`` from the copy's
    directory; yields its REST client and job id. The caller stops it (stop with a savepoint)."""
    rest_port = free_port()
    config = write_config(settings.with_overrides(flink={"rest_port": rest_port}), tmp_path / f"{name}.yaml")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    job = subprocess.Popen([*PZ, "run", "--config", str(config)],
                           cwd=release, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rest = FlinkRest(f"http://127.0.0.1:{rest_port}")
        job_id = wait_until(lambda: _running(rest), 120, f"the {name} release's job")[0]
        yield rest, job_id
        assert job.wait(timeout=120) == 0, job.stderr.read()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()


def test_a_savepoint_of_a_release_that_pickled_user_state_restores(stack, tmp_path):
    """The user state's encoding changed (pickled objects -> ``state.codec`` msgpack) under the same
    descriptor: this code reads an earlier release's objects as they are, and users go on from them."""
    settings, reader, processed = _three_clicks(tmp_path)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    with _release_job(_previous_release(tmp_path), settings, tmp_path, "previous") as (rest, job_id):
        wait_until(lambda: processed() == 3, 120, "the first three events")
        savepoint = rest.stop(job_id, (tmp_path / "savepoints").as_uri(), drain=False)

    produce([_click("a3", "ann", T + 3_000), _click("b2", "ben", T + 4_000), _click("c1", "cat", T + 5_000)],
            bootstrap, topic, progress=False)
    client = start_job(settings.with_overrides(flink={"savepoint_path": savepoint}))
    try:
        wait_until(lambda: processed() == 6, 120, "the three events after the savepoint")
    finally:
        client.cancel().result()
    ann, ben, cat = reader.get("ann"), reader.get("ben"), reader.get("cat")
    assert (ann["events_total"], ann["first_seen"], ann["counts"]) == (3, T, {"click": 3})
    assert (ben["events_total"], ben["first_seen"], ben["counts"]) == (2, T + 1_000, {"click": 2})
    assert (cat["events_total"], cat["first_seen"]) == (1, T + 5_000)


def _running(rest: FlinkRest) -> list[str] | None:
    try:
        return rest.running_jobs() or None
    except OSError:
        return None


def test_a_savepoint_with_state_the_job_no_longer_has_is_refused_unless_told_to_drop_it(stack, tmp_path):
    """The rate-alert detector (keyed state) in the savepoint's graph, not in the resumed one: an
    operator removed by a release (as the DataStream DLQ sink was)."""
    settings = isolated_settings(tmp_path, kafka={"bounded": False}, alerts={"event_rates": True})
    reader = ProfileReader.from_settings(settings)
    produce([_click("a1", "ann", T)], settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    client = start_job(settings)
    wait_until(lambda: reader.get("ann") is not None, 120, "the first profile")
    savepoint = stop_with_savepoint(client, (tmp_path / "savepoints").as_uri())

    without_alerts = settings.with_overrides(alerts={"event_rates": False}, flink={"savepoint_path": savepoint})
    with pytest.raises(Exception, match="(?s)Cannot map checkpoint/savepoint state for operator"):
        start_job(without_alerts)   # the local runner refuses it at submission

    produce([_click("a2", "ann", T + 1_000)], settings.kafka.bootstrap_servers, settings.kafka.topics.events,
            progress=False)
    resumed = start_job(without_alerts.with_overrides(flink={"savepoint_ignore_unclaimed_state": True}))
    try:
        wait_until(lambda: reader.get("ann")["events_total"] == 2, 120, "the event after the savepoint")
    finally:
        resumed.cancel().result()
