"""A busy user's state, kept in five Flink states (``state.user_store``: the value, the seen ids, the
log of held events, the big parts and the categories), restores from a savepoint as it was: the
restored job deduplicates against every id seen before it, shows the session closed before it,
closes the open session with every event held before it, and counts its categories on from where
they were."""

from __future__ import annotations

from collections import Counter

from personalization.pipelines.control import stop_with_savepoint
from personalization.replay.producer import produce
from personalization.serving.reader import ProfileReader
from personalization.state.codec import MAX_INLINE_HELD, MAX_INLINE_IDS, MAX_INLINE_ITEMS
from tests.support import isolated_settings, sessions_of, start_job, wait_until

T = 1_511_658_000_000
BEFORE, AFTER = 100, 20  # the busy user's events before the savepoint and after the restore
EARLIER = 70  # views of a visit ten hours before: a session closed before the savepoint
CATEGORIES = 80  # the views' categories, in turn


def _view(n: int, at: int = T, visit: str = "") -> dict:
    """One product view of the busy user, a second apart from ``at``: one session per visit."""
    return {"schema_version": 1, "event_id": f"busy {visit}{n} {{}}:*", "event_type": "product_view",
            "ts": at + n * 1_000, "user_id": "busy", "item_id": f"item-{visit}{n}", "category_id": f"cat-{n % CATEGORIES}"}


def test_a_busy_users_seen_ids_and_held_events_restore_from_a_savepoint(stack, tmp_path):
    # Every part apart from the value when the savepoint is taken: ids, held events, the open
    # session's distinct items for the rules, the closed session's summary (its items and categories),
    # the categories counted.
    assert max(MAX_INLINE_HELD, MAX_INLINE_IDS, MAX_INLINE_ITEMS, CATEGORIES) < BEFORE
    assert min(EARLIER, CATEGORIES) > MAX_INLINE_ITEMS
    settings = isolated_settings(tmp_path, kafka={"bounded": False, "topics": {"partitions": 1}},
                                 learning={"enabled": False}, profile={"top_categories": CATEGORIES})
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    reader = ProfileReader.from_settings(settings)
    counted = lambda: (reader.get("busy") or {}).get("events_total", 0)

    earlier = T - 10 * 3_600_000
    before = [_view(n, earlier, "a") for n in range(EARLIER)] + [_view(n) for n in range(BEFORE)]
    produce(before, bootstrap, topic, progress=False)
    client = start_job(settings)
    # The earlier visit closed (the watermark passed it), the session at T open, its events held.
    [closed] = wait_until(lambda: counted() == EARLIER + BEFORE and sessions_of(settings), 120,
                          f"the busy user's first {EARLIER + BEFORE} events and the earlier visit closed")
    savepoint = stop_with_savepoint(client, (tmp_path / "savepoints").as_uri())
    assert (closed["start"], closed["event_count"]) == (earlier, EARLIER)

    # After the restore: the rest of the session, and its first event again (a redelivery).
    after = [_view(n) for n in range(BEFORE, BEFORE + AFTER)]
    produce(after + [_view(0)], bootstrap, topic, progress=False)
    client = start_job(settings.with_overrides(flink={"savepoint_path": savepoint}))
    total = EARLIER + BEFORE + AFTER
    restored = wait_until(lambda: counted() == total and reader.get("busy"), 120, "the events after the restore")
    assert restored["last_session"]["session_id"] == closed["session_id"]  # read back from the restored state
    assert restored["current_session"]["event_count"] == BEFORE + AFTER
    stop_with_savepoint(client, (tmp_path / "drained").as_uri(), drain=True)  # the end of time closes the session

    profile = reader.get("busy")
    assert (profile["events_total"], profile["counts"]) == (total, {"product_view": total})
    assert profile["sessions_closed"] == 2
    [_, session] = sessions_of(settings)
    assert (session["status"], session["start"], session["end"], session["event_count"]) == (
        "closed", T, T + (BEFORE + AFTER - 1) * 1_000, BEFORE + AFTER)
    assert sorted(session["items"]) == sorted(f"item-{n}" for n in range(BEFORE + AFTER))
    counted_per_category = Counter(view["category_id"] for view in before + after)
    listed = {category["category_id"]: category["events"] for category in profile["top_categories"]}
    assert listed == counted_per_category  # every category listed: counts from before and after the restore
