"""The recommender's two keyed halves (core.recommend.stream) without Flink."""

from __future__ import annotations

import pickle

from personalization.config.settings import load_settings
from personalization.core.events import Event
from personalization.core.identity import ForgetLink
from personalization.core.privacy import ControlRequest, ErasureRequest
from personalization.core.recommend.stream import Fill, InOrder, Interaction, ItemRow, Recommendations, Request, \
    UserHistory, new_trend, release, user_control, user_step

CONFIG = load_settings().with_overrides(recommendations={
    "top_n": 3, "history_length": 4, "max_purchased": 2, "knn_neighbours": 2, "max_per_category": 1}).recommendations.core()


def event(user: str, item: str | None, category: str | None, kind: str, ts: int, *, consent: str | None = None,
          items: tuple[str, ...] | None = None) -> Event:
    return Event(f"{user}-{ts}", kind, ts, user, item_id=item, category_id=category, consent=consent, items=items)


def step(history: UserHistory, *args, **kwargs) -> list:
    return user_step(history, CONFIG, "granted", event(*args, **kwargs))


def run(events: list[tuple], config=CONFIG) -> tuple[dict[str, ItemRow], list]:
    """Feed (user, item, category, kind, ts[, shown items]) through the three sides as the job
    does, the trending side's messages released once all are in; the answers in order of time."""
    job = InOrder(config, "granted")
    answers = job.feed(event(user, item, category, kind, ts, items=shown[0] if shown else None)
                       for user, item, category, kind, ts, *shown in events)
    return job.rows, sorted(answers + job.release_all(), key=lambda a: a.at)


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
        step(user, "u", item, category, kind, ts)
    assert len(user.recent) == 4 and list(user.purchased) == ["i98", "i99"]
    assert max(len(row.neighbours) for row in rows.values()) <= 2 * CONFIG.knn_neighbours
    assert all(len(a.items) <= CONFIG.top_n for a in answers)


def test_no_consent_no_learning_and_other_event_types_ignored() -> None:
    history = UserHistory()
    assert step(history, "u", "x", None, "product_view", 1, consent="denied") == []
    assert step(history, "u", "y", None, "product_view", 2) == []
    assert step(history, "u", None, None, "impression", 3, items=("x",)) == []
    assert not history.recent and history.exposure is None
    assert step(UserHistory(), "u", "x", None, "scroll", 1) == []
    assert isinstance(step(UserHistory(), "u", "x", None, "add_to_cart", 1)[-1], Request)


def _used(history: UserHistory) -> UserHistory:
    """A history with items, a purchase and capped impressions, after three requests."""
    for n, (item, kind) in enumerate((("x", "product_view"), ("y", "purchase"), ("z", "add_to_cart"))):
        step(history, "u", item, "c", kind, n)
    for n in range(CONFIG.cap_impressions):
        step(history, "u", None, None, "impression", 10 + n, items=("w",))
    assert history.recent and history.purchased and history.exposure is not None and history.requests == 3
    return history


def test_an_erasure_or_opt_out_forgets_the_history_and_no_event_is_used_until_a_grant() -> None:
    for request in (ErasureRequest("u", "r1", 5), ControlRequest("u", "r1", 5, "opt_out"),
                    ForgetLink("u", ErasureRequest("the-user-u-linked-to", "r1", 5))):
        history = _used(UserHistory())
        assert user_control(history, request) == 3   # every answer so far is numbered 3 or below
        assert not history.recent and not history.purchased and history.exposure is None
        assert step(history, "u", "v", "c", "product_view", 20) == []   # consent denied from now on
        after = step(history, "u", "v", "c", "product_view", 21, consent="granted")
        assert after == [Request("v", "c", "u", 4, 21, (), (), (), ("all",))]   # numbered above the tombstone, nothing recalled


def test_a_reset_forgets_the_history_and_keeps_consent_an_opt_in_grants() -> None:
    history = _used(UserHistory(consent="granted"))
    assert user_control(history, ControlRequest("u", "r1", 5, "reset")) == 3
    assert not history.recent and not history.purchased and history.exposure is None
    assert step(history, "u", "v", "c", "product_view", 20) == [Request("v", "c", "u", 4, 20, (), (), (), ("all",))]
    denied = UserHistory(consent="denied")
    assert user_control(denied, ControlRequest("u", "r2", 6, "opt_in")) is None   # nothing to remove
    assert denied.consent == "granted"


def test_the_same_input_gives_the_same_answers() -> None:
    events = [(f"u{n % 7}", f"i{n % 13}", f"c{n % 3}", "product_view", n * 1000) for n in range(300)]
    assert run(events)[1] == run(events)[1]


def test_items_shown_cap_impressions_times_without_a_click_go_last_until_the_cap_expires() -> None:
    history = [("b", "x", "c1", "product_view", 1), ("b", "y", "c2", "product_view", 2),
               ("b", "z", "c3", "product_view", 3)]
    _, plain = run([*history, ("b", "w", "c4", "product_view", 4)])
    first = plain[-1].items[0]["item"]
    shown = [("b", None, None, "impression", 3, (first,))] * CONFIG.cap_impressions
    _, capped = run([*history, *shown, ("b", "w", "c4", "product_view", 4)])
    assert [r["item"] for r in capped[-1].items] == [r["item"] for r in plain[-1].items[1:]] + [first]
    # a click on the item clears its count; after cap_duration it is back in place
    _, clicked = run([*history, *shown, ("b", first, None, "click", 4), ("b", "w", "c4", "product_view", 5)])
    _, expired = run([*history, *shown, ("b", "w", "c4", "product_view", 3 + CONFIG.cap_duration_ms)])
    assert clicked[-1].items[0]["item"] == expired[-1].items[0]["item"] == first


def test_a_crawler_shown_thousands_of_items_keeps_cap_max_items_of_them() -> None:
    history = UserHistory()
    for n in range(1_000):
        step(history, "u", None, None, "impression", n, items=tuple(f"i{n}-{k}" for k in range(10)))
    assert len(history.exposure.shown) <= CONFIG.cap_max_items
    assert len(history.exposure.demoted_until) <= CONFIG.cap_max_items


def test_a_history_pickled_before_frequency_capping_restores_without_it() -> None:
    history = UserHistory()
    step(history, "u", "x", None, "product_view", 1)
    old_form = [history.recent, history.purchased, history.consent, history.requests]  # the previous release's
    restored = UserHistory.__new__(UserHistory)
    restored.__setstate__(old_form)
    assert restored.exposure is None and restored.requests == 1
    assert pickle.loads(pickle.dumps(history)) == history


NO_TRENDING = load_settings().with_overrides(recommendations={
    "top_n": 3, "history_length": 4, "max_purchased": 2, "knn_neighbours": 2, "max_per_category": 1,
    "blend_weights": {"knn": 1.0, "recent": 0.5, "trending": 0.0}}).recommendations.core()
TWO_PER_CATEGORY = load_settings().with_overrides(recommendations={
    "top_n": 4, "max_per_category": 2}).recommendations.core()
NO_CATEGORY_LIMIT = load_settings().with_overrides(recommendations={
    "top_n": 4, "max_per_category": 0}).recommendations.core()


def test_places_left_are_filled_with_what_trends_in_the_items_category_up_to_its_time() -> None:
    crowd = [(f"u{n}", item, "c1", "product_view", 100 + n) for n, item in enumerate("xxxyyz")]
    late = [("v", "w", "c1", "product_view", 500)]          # after the newcomer: not trending yet for them
    _, answers = run([*crowd, ("new", "q", "c1", "product_view", 200), *late, ("other", "o", "c2", "product_view", 201)],
                     TWO_PER_CATEGORY)
    newcomer = next(a for a in answers if a.user == "new")
    # q was never co-viewed: the places go to c1's trending items as of ts 200, most interactions first,
    # at most max_per_category of the category
    assert newcomer.items == [{"item": "x", "source": "trending", "context": "category:c1"},
                              {"item": "y", "source": "trending", "context": "category:c1"}]
    assert next(a for a in answers if a.user == "other").items == []  # nothing trends in c2 but o itself
    _, plain = run([*crowd, ("new", "q", "c1", "product_view", 200)], NO_TRENDING)
    assert next(a for a in plain if a.user == "new").items == []     # trending weight 0: no fill


def test_the_fill_does_not_depend_on_the_order_messages_arrived_in() -> None:
    config = TWO_PER_CATEGORY
    trend_messages = [Interaction("c1", item, ts) for ts, item in enumerate("abcabca")]
    fill = Fill("c1", Recommendations("u", 1, [], "m", "z", 4), 2, ("z",), ("a",))
    forward = release(new_trend(config), [*trend_messages, fill], config)
    backward = release(new_trend(config), [fill, *reversed(trend_messages)], config)
    # as of ts 4: a twice, b twice, c once (interactions at ts 4 count, later ones do not); a is
    # demoted, so after c
    assert forward == backward
    assert [r["item"] for r in forward[0].items] == ["b", "c"]
    # with a third place, the capped item takes it; never more of the category than max_per_category
    assert [r["item"] for r in release(new_trend(config), [*trend_messages, fill._replace(room=3)], NO_CATEGORY_LIMIT)[0]
            .items] == ["b", "c", "a"]
    assert [r["item"] for r in release(new_trend(config), [*trend_messages, fill._replace(room=3)], config)[0]
            .items] == ["b", "c"]


def test_the_demo_explains_every_source_an_answer_can_name() -> None:
    from personalization.core.recommend.stream import CO_VIEW, RECENT, TRENDING
    from personalization.tools.demo import WHY

    assert set(WHY) == {CO_VIEW, RECENT, TRENDING}
    from personalization.tools.demo import why
    assert why({"item": "x", "source": TRENDING, "context": "referrer:google.com"}, "q") == \
        "trending: among the most interacted items among users who came from google.com lately (cold start)"
    assert "of q's category" in why({"item": "x", "source": TRENDING, "context": "category:c1"}, "q")
    assert "on the whole site" in why({"item": "x", "source": TRENDING, "context": "all"}, "q")
    assert why({"item": "x", "source": RECENT}, "q") == "the user touched it recently"


def test_a_capped_item_of_the_answer_goes_after_the_trending_items_added() -> None:
    reco = Recommendations("u", 1, [{"item": "k", "source": "co-view"}, {"item": "d", "source": "recent"}], "m", "z", 4)
    trend_messages = [Interaction("c1", item, ts) for ts, item in enumerate("ab")]
    filled = release(new_trend(TWO_PER_CATEGORY), [*trend_messages, Fill("c1", reco, 2, ("z", "k", "d"), ("d",))],
                     TWO_PER_CATEGORY)
    assert [r["item"] for r in filled[0].items] == ["k", "a", "b", "d"]
