"""The recommender's two keyed halves (core.recommend.stream) without Flink."""

from __future__ import annotations

from personalization.config.settings import load_settings
from personalization.core.recommend.stream import CoView, ItemRow, Request, UserHistory, answer, learn, user_step

CONFIG = load_settings().with_overrides(recommendations={
    "top_n": 3, "history_length": 4, "max_purchased": 2, "knn_neighbours": 2, "max_per_category": 1}).recommendations.core()


def run(events: list[tuple]) -> tuple[dict[str, ItemRow], list]:
    """Feed (user, item, category, kind, ts) through both halves as the job does; the answers in order."""
    users: dict[str, UserHistory] = {}
    rows: dict[str, ItemRow] = {}
    answers = []
    for user, item, category, kind, ts in events:
        for message in user_step(users.setdefault(user, UserHistory()), CONFIG, "granted", user, item, category,
                                 kind, ts, None):
            row = rows.setdefault(message.item, ItemRow())
            if isinstance(message, CoView):
                learn(row, message, CONFIG)
            else:
                answers.append(answer(row, message, CONFIG))
    return rows, answers


def test_co_viewed_items_are_recommended_with_their_source_purchases_excluded_one_per_category() -> None:
    _, answers = run([("a", "x", "c1", "product_view", 1), ("a", "y", "c1", "product_view", 2),
                      ("a", "z", "c2", "purchase", 3), ("b", "x", "c1", "product_view", 10),
                      ("b", "w", "c3", "product_view", 11), ("b", "x", "c1", "product_view", 12)])
    last = answers[-1]
    assert (last.user, last.version, last.item) == ("b", 3, "x")
    # x's neighbours: w (user b, twice: 2), z (a's purchase, 4 / distance 2), y (1); one per category
    assert [r["item"] for r in last.items] == ["w", "z", "y"]
    assert {r["source"] for r in last.items} <= {"co-view", "recent"}
    assert last.model_version.startswith("coview-knn@")
    # user a bought z: never recommended to a afterwards
    assert all(r["item"] != "z" for r in answers[2].items)


def test_every_per_user_and_per_item_structure_is_bounded() -> None:
    events = [("u", f"i{n}", None, "purchase", n) for n in range(100)]
    rows, answers = run(events)
    user = UserHistory()
    for _, item, category, kind, ts in events:
        user_step(user, CONFIG, "granted", "u", item, category, kind, ts, None)
    assert len(user.recent) == 4 and list(user.purchased) == ["i98", "i99"]
    assert max(len(row.neighbours) for row in rows.values()) <= 2 * CONFIG.knn_neighbours
    assert all(len(a.items) <= CONFIG.top_n for a in answers)


def test_no_consent_no_learning_and_other_event_types_ignored() -> None:
    history = UserHistory()
    assert user_step(history, CONFIG, "granted", "u", "x", None, "product_view", 1, "denied") == []
    assert user_step(history, CONFIG, "granted", "u", "y", None, "product_view", 2, None) == []
    assert not history.recent
    assert user_step(UserHistory(), CONFIG, "granted", "u", "x", None, "scroll", 1, None) == []
    assert isinstance(user_step(UserHistory(), CONFIG, "granted", "u", "x", None, "add_to_cart", 1, None)[-1], Request)


def test_the_same_input_gives_the_same_answers() -> None:
    events = [(f"u{n % 7}", f"i{n % 13}", f"c{n % 3}", "product_view", n * 1000) for n in range(300)]
    assert run(events)[1] == run(events)[1]
