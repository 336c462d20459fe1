"""Top-N selection: exclusions, diversity per category, frequency capping from impressions."""

from personalization.core.recommend.selection import Exposure, select

CATEGORY = {"a": "x", "b": "x", "c": "y", "d": "x"}.get


def test_excluded_and_over_quota_items_are_skipped() -> None:
    assert select(["a", "b", "d", "c"], 3, exclude={"b"}, category_of=CATEGORY, max_per_category=1) == ["a", "c"]


def test_an_item_shown_n_times_without_click_is_demoted_until_the_cap_expires() -> None:
    exposure = Exposure(cap_impressions=2, cap_duration_ms=100)
    exposure.impression(["a"], 0)
    exposure.impression(["a"], 10)
    ranked = select(["a", "c"], 2, exclude=set(), category_of=CATEGORY, max_per_category=0,
                    demoted=lambda item: exposure.demoted(item, 50))
    assert ranked == ["c", "a"]
    assert not exposure.demoted("a", 110)


def test_a_click_clears_the_cap() -> None:
    exposure = Exposure(cap_impressions=1, cap_duration_ms=100)
    exposure.impression(["a"], 0)
    exposure.click("a")
    assert not exposure.demoted("a", 1)


def test_demoted_items_fill_the_places_left_within_the_category_limit() -> None:
    demoted = {"a", "d"}.__contains__
    assert select(["a", "d", "b", "c"], 4, exclude=set(), category_of=CATEGORY, max_per_category=2,
                  demoted=demoted) == ["b", "c", "a"]
