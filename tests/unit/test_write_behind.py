"""WriteBehind's batching rules, with a writer that records what it is asked to send."""

from personalization.serving.redis_store import WriteBehind, Written


class RecordingWriter:
    """Records what it is asked to send; refuses the users in ``refuse`` as Redis would."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.sent: list[list[tuple]] = []
        self.refuse = refuse or {}

    def write_many(self, writes) -> Written:
        self.sent.append(list(writes))
        refused = {w[0]["user_id"]: self.refuse[w[0]["user_id"]] for w in writes if w[0]["user_id"] in self.refuse}
        return Written(len(writes) - len(refused), refused)


def _profile(user: str, version: int) -> dict:
    return {"user_id": user, "version": version}


def test_only_the_first_held_back_write_of_a_user_asks_for_a_flush_and_the_newest_wins():
    writer = RecordingWriter()
    writes = WriteBehind(writer, max_batch=10)
    assert writes.put("a", _profile("a", 1), []) is True
    assert writes.put("a", _profile("a", 2), []) is False  # already held back: its flush is due anyway
    assert writes.put("b", _profile("b", 1), []) is True
    assert writer.sent == []
    assert writes.flush() == 2
    assert writer.sent == [[(_profile("a", 2), []), (_profile("b", 1), [])]]
    assert writes.put("a", _profile("a", 3), []) is True  # held back again after the flush


def _change(seq: int) -> dict:
    return {"seq": seq, "segment": "vip", "action": "enter"}


def test_a_write_with_segment_changes_is_held_back_like_any_other_and_the_newest_wins():
    writer = RecordingWriter()
    writes = WriteBehind(writer, max_batch=10)
    writes.put("a", _profile("a", 1), [])
    assert writes.put("a", _profile("a", 2), [_change(1)]) is False
    assert writer.sent == [] and writes.is_pending("a")
    assert writes.put("a", _profile("a", 3), [_change(1), _change(2)]) is False
    assert writes.flush() == 1
    assert writer.sent == [[(_profile("a", 3), [_change(1), _change(2)])]]


def test_unwritten_keeps_the_changes_no_flushed_batch_has_carried():
    writes = WriteBehind(RecordingWriter(), max_batch=10)
    kept = [_change(1), _change(2)]
    assert writes.unwritten("a", kept) == kept  # nothing sent yet (e.g. restored from a checkpoint)
    writes.put("a", _profile("a", 1), kept)
    assert writes.unwritten("a", kept) == kept  # still pending: not written
    writes.flush()
    assert writes.unwritten("a", kept + [_change(3)]) == [_change(3)]
    assert writes.unwritten("a", [_change(3)]) == [_change(3)]  # told once: later changes are the caller's


def test_a_full_batch_is_sent_without_waiting_for_the_delay():
    writer = RecordingWriter()
    writes = WriteBehind(writer, max_batch=2)
    assert writes.put("a", _profile("a", 1), []) is True
    assert writes.put("b", _profile("b", 1), []) is False  # sent with the batch: nothing left to flush
    assert writer.sent == [[(_profile("a", 1), []), (_profile("b", 1), [])]]
    assert not writes.is_pending("a") and not writes.is_pending("b")


def test_a_refused_write_is_reported_once_and_not_sent_again():
    writer = RecordingWriter(refuse={"b": "ResponseError: WRONGTYPE Operation against a key holding the wrong kind"})
    writes = WriteBehind(writer, max_batch=10)
    writes.put("a", _profile("a", 1), [])
    writes.put("b", _profile("b", 1), [_change(1)])
    assert writes.flush() == 2
    assert writes.take_refused() == [((_profile("b", 1), [_change(1)]), writer.refuse["b"])]
    assert writes.take_refused() == []
    assert writes.unwritten("b", [_change(1)]) == []   # its changes went to the DLQ with it: not re-sent
