"""Item catalog (personalization.udfs.catalog) and the completion of events in the parse
operator (category from the catalog, pseudonymized user id)."""

from __future__ import annotations

import pytest

from personalization.core.events import Event
from personalization.operators.parse import complete_event
from personalization.udfs.catalog import CatalogError, load_catalog, write_catalog
from personalization.udfs.pseudonymize import Pseudonymizer

KEY = "k" * 32


def test_write_then_load_round_trip(tmp_path) -> None:
    path = tmp_path / "catalog.csv"
    assert write_catalog([("i2", "c9"), ("i1", "c1"), ("i2", "c9")], path) == 2
    assert path.read_text().splitlines() == ["item_id,category_id", "i1,c1", "i2,c9"]
    assert load_catalog(path) == {"i1": "c1", "i2": "c9"}


def test_an_item_with_two_categories_is_refused(tmp_path) -> None:
    with pytest.raises(CatalogError, match="item 'i1' has two categories"):
        write_catalog([("i1", "c1"), ("i1", "c2")], tmp_path / "catalog.csv")


def test_a_malformed_line_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,category_id\ni1,c1\ni2\n")
    with pytest.raises(CatalogError, match=r"catalog.csv:3: expected item_id,category_id"):
        load_catalog(path)


def test_completion_fills_only_missing_categories_of_known_items() -> None:
    catalog = {"i1": "c1"}
    bare = Event("e1", "product_view", 1, "u1", item_id="i1")
    assert complete_event(bare, catalog, None).category_id == "c1"
    own = Event("e2", "product_view", 1, "u1", item_id="i1", category_id="mine")
    assert complete_event(own, catalog, None) is own
    unknown = Event("e3", "product_view", 1, "u1", item_id="i404")
    assert complete_event(unknown, catalog, None) is unknown
    assert complete_event(bare, None, None) is bare


def test_completion_pseudonymizes_the_user_id(monkeypatch) -> None:
    monkeypatch.setenv("PZ_TEST_KEY", KEY)
    pseudonym = Pseudonymizer("PZ_TEST_KEY")
    event = Event("e1", "click", 1, "alice", item_id="i1")
    done = complete_event(event, {"i1": "c1"}, pseudonym)
    assert (done.user_id, done.category_id, done.event_id) == (pseudonym("alice"), "c1", "e1")
    assert done.user_id.startswith("p_") and "alice" not in done.user_id
