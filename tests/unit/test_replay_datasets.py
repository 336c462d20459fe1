"""Dataset readers: exact mapping on hand-written rows in each dataset's format, plus the real files."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice, pairwise
from pathlib import Path

import fastjsonschema
import pytest

from personalization.config.settings import EVENT_SCHEMA
from personalization.replay.datasets import (
    DATASETS_ENV,
    JD_EPOCH_MS,
    JD_START_WINDOW_MS,
    DatasetLocation,
    locate_datasets,
    merge_by_time,
    read_dataset,
    read_jd,
    read_taobao,
)
from personalization.replay.synthetic import augment

REPO = Path(__file__).resolve().parents[2]
validate = fastjsonschema.compile(json.loads(EVENT_SCHEMA.read_text()))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_taobao_rows_map_to_contract_events(tmp_path: Path) -> None:
    rows = ["7,100,20,pv,1700000000", "7,100,20,cart,1700000001", "8,5,3,fav,1700000001", "8,5,3,buy,1700000002"]
    path = write(tmp_path, "UserBehavior.csv", "\n".join(rows) + "\n")

    events = list(read_taobao(path))

    user_7 = {"schema_version": 1, "user_id": "tb-7", "item_id": "100", "category_id": "20", "source": "taobao"}
    user_8 = {"schema_version": 1, "user_id": "tb-8", "item_id": "5", "category_id": "3", "source": "taobao"}
    assert events == [
        {**user_7, "event_id": "tb-1", "event_type": "product_view", "ts": 1_700_000_000_000},
        {**user_7, "event_id": "tb-2", "event_type": "add_to_cart", "ts": 1_700_000_001_000},
        {**user_8, "event_id": "tb-3", "event_type": "favorite", "ts": 1_700_000_001_000},
        {**user_8, "event_id": "tb-4", "event_type": "purchase", "ts": 1_700_000_002_000},
    ]
    for event in events:
        validate(event)


def test_taobao_bad_row_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "UserBehavior.csv", "7,100,20,pv,1700000000\n7,100,20,like,1700000001\n")
    with pytest.raises(ValueError, match=r"UserBehavior.csv:2: bad Taobao row"):
        list(read_taobao(path))


def test_jd_line_is_one_user_session_timed_by_previous_intervals(tmp_path: Path) -> None:
    path = write(tmp_path, "JD_Test_sample", "11+5+3+10+40 11+8+3+5+40 12+9+3+0+7\n")

    events = list(read_jd(path, "test"))

    start = events[0]["ts"]
    assert JD_EPOCH_MS <= start < JD_EPOCH_MS + JD_START_WINDOW_MS
    common = {
        "schema_version": 1,
        "user_id": "jd-test-1",
        "session_id": "jd-test-1",
        "category_id": "3",
        "source": "jd",
    }
    assert events == [
        {
            **common,
            "event_id": "jd-test-1-0",
            "event_type": "product_view",
            "ts": start,
            "item_id": "11",
            "referrer": "search",
            "dwell_ms": 40_000,
        },
        {
            **common,
            "event_id": "jd-test-1-1",
            "event_type": "scroll",
            "ts": start + 10_000,
            "item_id": "11",
            "scroll_depth": 1.0,
        },
        {**common, "event_id": "jd-test-1-2", "event_type": "add_to_cart", "ts": start + 15_000, "item_id": "12"},
    ]
    for event in events:
        validate(event)


def test_jd_maps_every_behavior_type(tmp_path: Path) -> None:
    line = " ".join(f"9+{behavior}+4+1+2" for behavior in range(1, 11))
    events = list(read_jd(write(tmp_path, "JD_Test_sample", line + "\n"), "test"))

    detail = [
        (e["event_type"], e.get("referrer") or e.get("target") or e.get("scroll_depth"), e.get("dwell_ms"))
        for e in events
    ]
    assert detail == [
        ("product_view", "home", 2000),
        ("product_view", "category", 2000),
        ("product_view", "sale", 2000),
        ("product_view", "cart", 2000),
        ("product_view", "search", 2000),
        ("click", "comments", None),
        ("click", "specification", None),
        ("scroll", 1.0, None),
        ("add_to_cart", None, None),
        ("purchase", None, None),
    ]


@pytest.mark.parametrize("token", ["1+2+3", "1+11+3+4+5", "1+2+3+-4+5", "a+2+3+4+5"])
def test_jd_bad_token_names_file_and_line(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, "JD_Test_sample", f"1+5+3+4+5\n1+5+3+4+5 {token}\n")
    with pytest.raises(ValueError, match=r"JD_Test_sample:2: bad JD token 1"):
        list(read_jd(path, "test"))


def test_jd_session_starts_are_seeded_staggered_and_prefix_stable(tmp_path: Path) -> None:
    path = write(tmp_path, "JD_Test_sample", "".join(f"{n}+5+1+60+30\n" for n in range(1, 101)))
    starts = [e["ts"] for e in read_jd(path, "test", seed=1)]

    assert starts == [e["ts"] for e in read_jd(path, "test", seed=1)]
    assert starts != [e["ts"] for e in read_jd(path, "test", seed=2)]
    assert len(set(starts)) == 100
    assert all(JD_EPOCH_MS <= ts < JD_EPOCH_MS + JD_START_WINDOW_MS for ts in starts)
    prefix = write(tmp_path, "JD_Prefix_sample", "".join(f"{n}+5+1+60+30\n" for n in range(1, 11)))
    assert [e["ts"] for e in read_jd(prefix, "test", seed=1)] == starts[:10]


def test_jd_time_ordered_is_a_sorted_permutation_of_line_order(tmp_path: Path) -> None:
    lines = "".join(f"{n}+5+1+{600 * n}+30 {n}+7+1+5+30 {n}+9+1+0+30\n" for n in range(1, 21))
    path = write(tmp_path, "JD_Test_sample", lines)

    by_line = list(read_jd(path, "test"))
    by_time = list(read_jd(path, "test", time_ordered=True))

    assert [e["ts"] for e in by_time] == sorted(e["ts"] for e in by_line)
    assert sorted(e["event_id"] for e in by_time) == sorted(e["event_id"] for e in by_line)
    assert by_time != by_line


def test_merge_by_time_keeps_argument_order_on_ties() -> None:
    a = [{"event_id": "a1", "ts": 1}, {"event_id": "a2", "ts": 3}]
    b = [{"event_id": "b1", "ts": 1}, {"event_id": "b2", "ts": 2}]
    assert [e["event_id"] for e in merge_by_time(a, b)] == ["a1", "b1", "b2", "a2"]


def test_locate_datasets_reports_each_missing_file(tmp_path: Path) -> None:
    location = locate_datasets(tmp_path)

    assert set(location.missing) == {
        tmp_path / "taobao_userbehavior" / "UserBehavior.csv",
        tmp_path / "jd_micro_behaviors" / "JD_Applicances_sample",
        tmp_path / "jd_micro_behaviors" / "JD_Computers_sample",
    }
    report = location.report()
    assert all(str(path) in report for path in location.missing)
    assert DATASETS_ENV in report
    with pytest.raises(FileNotFoundError, match="JD_Computers_sample"):
        location.require()


def test_locate_datasets_finds_a_complete_folder(tmp_path: Path) -> None:
    for path in locate_datasets(tmp_path).missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    location = locate_datasets(tmp_path)
    assert location.missing == ()
    location.require()
    assert "all dataset files present" in location.report()


def test_locate_datasets_defaults_to_env_then_sibling_shared_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    assert locate_datasets().root == tmp_path
    monkeypatch.delenv(DATASETS_ENV)
    assert locate_datasets().root == REPO.parent / "shared" / "datasets"


def test_read_dataset_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'amazon'"):
        read_dataset("amazon", locate_datasets(tmp_path))


def test_real_datasets_first_events_are_valid_sorted_and_unique(datasets: DatasetLocation) -> None:
    n = 20_000
    for name, sources in (("taobao", {"taobao"}), ("jd", {"jd"}), ("all", {"taobao", "jd"})):
        events = list(islice(read_dataset(name, datasets, seed=0), n))
        augmented = list(islice(augment(events, seed=0), n))
        for stream in (events, augmented):
            assert len(stream) == n, name
            assert all(a["ts"] <= b["ts"] for a, b in pairwise(stream)), name
            assert len({e["event_id"] for e in stream}) == n, name
            for event in stream:
                validate(event)
        assert {e["source"] for e in events} == sources
        assert {e["source"] for e in augmented} == sources | {"synthetic"}
        assert Counter(e["event_type"] for e in events)["product_view"] > n / 2, name
