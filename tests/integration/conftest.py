"""A real replay shared by the trustworthy-input tests (test_hostile, test_privacy): the valid
events, and the end state of one clean job run over them, computed once per test session."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from personalization.pipelines.main import run_job
from personalization.topics.records import read_topic
from personalization.replay.datasets import read_dataset, read_taobao
from personalization.replay.producer import produce
from personalization.replay.synthetic import augment
from personalization.udfs.catalog import write_catalog
from tests.support import dead_letters, isolated_settings, redis_state, sessions_of

VALID_EVENTS = 4_000  # the first events of the time-ordered Taobao + JD replay, with synthetic signals
OLDEST_VALID = int(datetime(2017, 1, 1, tzinfo=UTC).timestamp() * 1000)  # the data is of 2017-11


def strip_taobao_categories(event: dict) -> dict:
    """Taobao events name their item without its category: the item catalog must fill it in."""
    if event.get("source") == "taobao" and "item_id" in event:
        return {k: v for k, v in event.items() if k != "category_id"}
    return event


@pytest.fixture(scope="session")
def real_replay(stack, datasets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real-replay")
    catalog = tmp / "catalog.csv"
    write_catalog(((e["item_id"], e["category_id"]) for e in read_taobao(datasets.taobao)), catalog)
    originals = list(itertools.islice(augment(read_dataset("all", datasets), seed=5), VALID_EVENTS))
    events = [strip_taobao_categories(e) for e in originals]
    now = int(datetime.now(UTC).timestamp() * 1000)
    overrides = {
        "enrichment": {"item_catalog": str(catalog)},
        # events older than 2017-01-01 are ts_too_old (the replay itself is from 2017-11)
        "validation": {"max_event_age": now - OLDEST_VALID},
        "flink": {"restart_attempts": 0},  # any exception fails the run instead of being retried
    }
    settings = isolated_settings(tmp, **overrides)
    # One partition: the input order is exactly as written (the other partitions stay empty).
    produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, partitioner=0,
            progress=False)
    run_job(settings)
    topics = settings.kafka.topics
    return {
        "settings": settings, "overrides": overrides, "originals": originals, "events": events,
        "redis": redis_state(settings), "sessions": sessions_of(settings),
        "late": read_topic(settings, topics.late), "dlq": dead_letters(settings),
        "segment_changes": sorted(read_topic(settings, topics.segment_changes),
                                  key=lambda r: (r["user_id"], r["seq"])),
    }
