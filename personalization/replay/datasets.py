"""Readers that turn the shared research datasets into contract-v1 events.

The dataset files are third-party research data with unclear licences: they are
read in place from a shared folder and never copied into this repository.

Taobao UserBehavior has users and absolute times; JD Micro-Behaviors has neither.
Each JD line is one session of an unknown user, so it becomes its own user
``jd-<tag>-<line>``. Its start time is synthetic: a per-file ``random.Random``
seeded with ``jd/<tag>/<seed>`` draws one start per line, uniformly over
``JD_START_WINDOW_MS`` (2 h) from ``JD_EPOCH_MS`` (2017-11-26T01:00:00Z, the first
second of the Taobao slice, so that a merged replay interleaves both datasets).
Event times inside a session are the start plus the sum of the previous tokens'
``time_interval``; the last token's interval has no documented meaning and is
ignored. Draws are sequential, so a prefix of a file always gets the same times.
"""

from __future__ import annotations

import heapq
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A contract-v1 event as decoded JSON (the payload, not the core's parsed record).
EventDict = dict[str, Any]

DATASETS_ENV = "PZ_DATASETS_DIR"
TAOBAO_FILE = Path("taobao_userbehavior/UserBehavior.csv")
# Tag -> file; "Applicances" is the dataset authors' spelling.
JD_FILES = {
    "appliances": Path("jd_micro_behaviors/JD_Applicances_sample"),
    "computers": Path("jd_micro_behaviors/JD_Computers_sample"),
}
JD_EPOCH_MS = 1_511_658_000_000
JD_START_WINDOW_MS = 2 * 3600 * 1000

TAOBAO_EVENT_TYPES = {"pv": "product_view", "cart": "add_to_cart", "fav": "favorite", "buy": "purchase"}
# JD behavior_type 1..5: how the user reached the product page.
JD_REFERRERS = {1: "home", 2: "category", 3: "sale", 4: "cart", 5: "search"}
JD_CLICK_TARGETS = {6: "comments", 7: "specification"}


@dataclass(frozen=True)
class DatasetLocation:
    """Where the shared datasets are expected, and which of their files exist."""

    root: Path
    taobao: Path
    jd: dict[str, Path]

    @property
    def missing(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.taobao, *self.jd.values()) if not p.is_file())

    def report(self) -> str:
        """One human-readable paragraph: what is missing and how to point elsewhere."""
        if not self.missing:
            return f"all dataset files present under {self.root}"
        listing = "\n".join(f"  - {p}" for p in self.missing)
        return (
            f"dataset files missing under {self.root}:\n{listing}\n"
            f"set {DATASETS_ENV} to the shared datasets folder, or use the synthetic generator"
        )

    def require(self) -> None:
        """Raise ``FileNotFoundError`` with :meth:`report` unless every file is present."""
        if self.missing:
            raise FileNotFoundError(self.report())


def locate_datasets(root: Path | None = None) -> DatasetLocation:
    """Find the shared datasets: ``root``, else ``$PZ_DATASETS_DIR``, else ``<repo>/../shared/datasets``."""
    if root is None:
        env = os.environ.get(DATASETS_ENV)
        repo = Path(__file__).resolve().parents[2]
        root = Path(env) if env else repo.parent / "shared" / "datasets"
    return DatasetLocation(
        root=root,
        taobao=root / TAOBAO_FILE,
        jd={tag: root / name for tag, name in JD_FILES.items()},
    )


def read_taobao(path: Path) -> Iterator[EventDict]:
    """Taobao ``user,item,category,behavior,ts_seconds`` rows; event_id ``tb-<line>``."""
    with path.open(encoding="ascii") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                user, item, category, behavior, seconds = line.strip().split(",")
                event = {
                    "schema_version": 1,
                    "event_id": f"tb-{line_no}",
                    "event_type": TAOBAO_EVENT_TYPES[behavior],
                    "ts": int(seconds) * 1000,
                    "user_id": f"tb-{int(user)}",
                    "item_id": str(int(item)),
                    "category_id": str(int(category)),
                    "source": "taobao",
                }
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{line_no}: bad Taobao row {line.strip()!r}") from exc
            yield event


def read_jd(path: Path, tag: str, *, seed: int = 0, time_ordered: bool = False) -> Iterator[EventDict]:
    """JD sessions as events, session after session, or merged into time order.

    ``time_ordered`` reads the whole file up front (every session's start is needed
    before the first event can be chosen) but parses each session lazily.
    """
    sessions = _jd_sessions(path, tag, seed)
    if time_ordered:
        return merge_by_time(*sessions)
    return (event for session in sessions for event in session)


def _jd_sessions(path: Path, tag: str, seed: int) -> Iterator[Iterator[EventDict]]:
    rng = random.Random(f"jd/{tag}/{seed}")
    with path.open(encoding="ascii") as lines:
        for line_no, line in enumerate(lines, start=1):
            if line.strip():
                start_ms = JD_EPOCH_MS + rng.randrange(JD_START_WINDOW_MS)
                yield _jd_session(line, f"{path}:{line_no}", f"jd-{tag}-{line_no}", start_ms)


def _jd_session(line: str, where: str, session: str, start_ms: int) -> Iterator[EventDict]:
    """One line = one user and one session, so both ids are the line's id."""
    ts_ms = start_ms
    for index, token in enumerate(line.split()):
        try:
            sku, behavior, category, interval, dwell = (int(field) for field in token.split("+"))
            if behavior not in range(1, 11) or min(sku, category, interval, dwell) < 0:
                raise ValueError(token)
        except ValueError as exc:
            raise ValueError(f"{where}: bad JD token {index} {token!r}") from exc
        event: EventDict = {
            "schema_version": 1,
            "event_id": f"{session}-{index}",
            "event_type": "product_view",
            "ts": ts_ms,
            "user_id": session,
            "session_id": session,
            "item_id": str(sku),
            "category_id": str(category),
            "source": "jd",
        }
        if behavior in JD_REFERRERS:
            event.update(referrer=JD_REFERRERS[behavior], dwell_ms=dwell * 1000)
        elif behavior in JD_CLICK_TARGETS:
            event.update(event_type="click", target=JD_CLICK_TARGETS[behavior])
        elif behavior == 8:  # Detail_bottom: the user reached the bottom of the page.
            event.update(event_type="scroll", scroll_depth=1.0)
        else:
            event["event_type"] = "add_to_cart" if behavior == 9 else "purchase"
        yield event
        ts_ms += interval * 1000


def read_dataset(name: str, location: DatasetLocation, *, seed: int = 0) -> Iterator[EventDict]:
    """``taobao``, ``jd`` or ``all`` in event-time order (both files are sorted or merged)."""
    jd = (read_jd(path, tag, seed=seed, time_ordered=True) for tag, path in location.jd.items())
    if name == "taobao":
        return read_taobao(location.taobao)
    if name == "jd":
        return merge_by_time(*jd)
    if name == "all":
        return merge_by_time(read_taobao(location.taobao), *jd)
    raise ValueError(f"unknown dataset {name!r}; expected taobao, jd or all")


def user_key(event: EventDict) -> str:
    """The Kafka key of an event: the anonymous id when there is one, else the user id. A device's
    events then share a partition, so its link (an event with both ids) is read after its
    anonymous events (``core.identity``)."""
    identity: str = event.get("anonymous_id") or event["user_id"]
    return identity


def merge_by_time(*streams: Iterable[EventDict]) -> Iterator[EventDict]:
    """Merge streams that are each sorted by ``ts``; ties keep argument order."""
    return heapq.merge(*streams, key=lambda event: event["ts"])
