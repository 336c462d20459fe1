"""A busy user's state, kept in three Flink states (``state.user_store``: the value, the seen ids and
the log of held events), restores from a savepoint as it was: the restored job deduplicates
against every id seen before it and closes the session with every event held before it."""

from __future__ import annotations

from personalization.pipelines.control import stop_with_savepoint
from personalization.replay.producer import produce
from personalization.serving.reader import ProfileReader
from personalization.state.codec import MAX_INLINE_HELD, MAX_INLINE_IDS
from tests.support import isolated_settings, sessions_of, start_job, wait_until

T = 1_511_658_000_000
BEFORE, AFTER = 100, 20  # the busy user's events before the savepoint and after the restore


def _view(n: int) -> dict:
    """One product view of the busy user, a second apart: all in one session."""
    return {"schema_version": 1, "event_id": f"busy {n} {{}}:*", "event_type": "product_view",
            "ts": T + n * 1_000, "user_id": "busy", "item_id": f"item-{n}", "category_id": f"cat-{n % 7}"}


def test_a_busy_users_seen_ids_and_held_events_restore_from_a_savepoint(stack, tmp_path):
    assert BEFORE > max(MAX_INLINE_HELD, MAX_INLINE_IDS)  # both apart from the value when the savepoint is taken
    settings = isolated_settings(tmp_path, kafka={"bounded": False, "topics": {"partitions": 1}},
                                 learning={"enabled": False})
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    reader = ProfileReader.from_settings(settings)
    counted = lambda: (reader.get("busy") or {}).get("events_total", 0)  # noqa: E731

    produce([_view(n) for n in range(BEFORE)], bootstrap, topic, progress=False)
    client = start_job(settings)
    wait_until(lambda: counted() == BEFORE, 120, f"the busy user's first {BEFORE} events")
    savepoint = stop_with_savepoint(client, (tmp_path / "savepoints").as_uri())
    assert sessions_of(settings) == []  # the session was open, its events held, when the savepoint was taken

    # After the restore: the rest of the session, and its first event again (a redelivery).
    produce([_view(n) for n in range(BEFORE, BEFORE + AFTER)] + [_view(0)], bootstrap, topic, progress=False)
    client = start_job(settings.with_overrides(flink={"savepoint_path": savepoint}))
    wait_until(lambda: counted() == BEFORE + AFTER, 120, "the events after the restore")
    stop_with_savepoint(client, (tmp_path / "drained").as_uri(), drain=True)  # the end of time closes the session

    profile = reader.get("busy")
    assert (profile["events_total"], profile["counts"]) == (BEFORE + AFTER, {"product_view": BEFORE + AFTER})
    [session] = sessions_of(settings)
    assert (session["status"], session["start"], session["end"], session["event_count"]) == (
        "closed", T, T + (BEFORE + AFTER - 1) * 1_000, BEFORE + AFTER)
    assert sorted(session["items"]) == sorted(f"item-{n}" for n in range(BEFORE + AFTER))
