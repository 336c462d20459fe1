"""WriteBehind's batching rules, with a writer that records what it is asked to send."""

from personalization.serving.redis_store import WriteBehind


class RecordingWriter:
    def __init__(self) -> None:
        self.sent: list[list[tuple]] = []

    def write(self, profile, changes) -> None:
        self.sent.append([(profile, changes)])

    def write_many(self, writes) -> None:
        self.sent.append(list(writes))


def _profile(user: str, version: int) -> dict:
    return {"user_id": user, "version": version}


def test_only_the_first_held_back_write_of_a_user_asks_for_a_flush_and_the_newest_wins():
    writer = RecordingWriter()
    writes = WriteBehind(writer, max_batch=10)
    assert writes.put(_profile("a", 1), []) is True
    assert writes.put(_profile("a", 2), []) is False  # already held back: its flush is due anyway
    assert writes.put(_profile("b", 1), []) is True
    assert writer.sent == []
    assert writes.flush() == 2
    assert writer.sent == [[(_profile("a", 2), []), (_profile("b", 1), [])]]
    assert writes.put(_profile("a", 3), []) is True  # held back again after the flush


def test_a_write_with_segment_changes_goes_out_at_once_and_supersedes_the_held_one():
    writer = RecordingWriter()
    writes = WriteBehind(writer, max_batch=10)
    writes.put(_profile("a", 1), [])
    change = {"segment": "vip", "change": "entered"}
    assert writes.put(_profile("a", 2), [change]) is False
    assert writer.sent == [[(_profile("a", 2), [change])]]
    assert not writes.is_pending("a")
    assert writes.flush() == 0


def test_a_full_batch_is_sent_without_waiting_for_the_delay():
    writer = RecordingWriter()
    writes = WriteBehind(writer, max_batch=2)
    assert writes.put(_profile("a", 1), []) is True
    assert writes.put(_profile("b", 1), []) is False  # sent with the batch: nothing left to flush
    assert writer.sent == [[(_profile("a", 1), []), (_profile("b", 1), [])]]
    assert not writes.is_pending("a") and not writes.is_pending("b")
