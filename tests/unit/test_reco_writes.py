"""Recommendations held back for a batch (serving.reco_store.HeldRecommendations), with a writer
that records what it is asked to send, and item rows pickled before they held answers."""

import pickle

from personalization.core.recommend.stream import ItemRow, Recommendations
from personalization.serving.reco_store import HeldRecommendations


class RecordingWriter:
    def __init__(self) -> None:
        self.sent: list[list[Recommendations]] = []

    def write_many(self, recos) -> None:
        self.sent.append(list(recos))


def _reco(user: str, version: int) -> Recommendations:
    return Recommendations(user, version, [{"item": "i", "source": "co-view"}], "m", "x", version)


def test_one_answer_per_user_the_newest_request_wins_sent_on_flush() -> None:
    writer = RecordingWriter()
    held = HeldRecommendations(writer, max_batch=10)
    held.put(_reco("a", 2))
    held.put(_reco("a", 1))  # an older request answered later by another item: not sent over the newer
    held.put(_reco("b", 1))
    held.put(_reco("b", 3))
    assert writer.sent == []
    assert held.holds(_reco("a", 2)) and not held.holds(_reco("a", 1)) and not held.holds(_reco("b", 1))
    assert held.flush() == 2
    assert not held.holds(_reco("a", 2))
    assert sorted((r.user, r.version) for r in writer.sent[0]) == [("a", 2), ("b", 3)]
    assert held.flush() == 0 and len(writer.sent) == 1


def test_a_full_batch_is_sent_at_once() -> None:
    writer = RecordingWriter()
    held = HeldRecommendations(writer, max_batch=2)
    held.put(_reco("a", 1))
    assert writer.sent == []
    held.put(_reco("b", 1))
    assert [[r.user for r in batch] for batch in writer.sent] == [["a", "b"]]


def test_a_row_round_trips_with_its_unwritten_answers_and_an_old_row_restores_without() -> None:
    row = ItemRow("c", {"n": [1.0, 5, "c"]}, 3, {"a": _reco("a", 1)})
    assert pickle.loads(pickle.dumps(row)) == row
    for old in (["c", {"n": [1.0, 5, "c"]}, 3], (None, {"category": "c", "neighbours": {"n": [1.0, 5, "c"]}, "updates": 3})):
        restored = ItemRow.__new__(ItemRow)
        restored.__setstate__(old)
        assert restored == ItemRow("c", {"n": [1.0, 5, "c"]}, 3)
