"""Event-time sessions (personalization.core.sessions): split, closing, late data, finalization.

Every expected value below is derived by hand from the module's documented semantics:
a new session starts when the gap to the previous event reaches ``gap_ms`` or the session
would reach ``max_length_ms``; a session closes when the watermark reaches ``closes_at``
(``min(last + gap, first + max) - 1``); events are forgotten once the watermark reaches
``end + gap + allowed_lateness``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from personalization.core import sessions as sessions_module
from personalization.core.events import Event
from personalization.core.sessions import (
    OpenSession,
    SessionRules,
    SessionState,
    SessionSummary,
    add_event,
    advance,
    closes_at,
    next_deadline,
    open_session,
    session_id,
    split,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
USER = "u"
END = 2**63 - 1
RULES = SessionRules(gap_ms=1_000, max_length_ms=5_000, allowed_lateness_ms=2_000)


def ev(ts: int, eid: str | None = None, etype: str = "page_view", **fields) -> Event:
    return Event(event_id=eid or f"e{ts}", event_type=etype, ts=ts, user_id=USER, **fields)


def state_with(*events: Event) -> SessionState:
    state = SessionState()
    for event in events:
        add_event(state, event)
    return state


def split_ts(*ts: int, rules: SessionRules = RULES) -> list[list[int]]:
    state = state_with(*(ev(t, f"e{i}") for i, t in enumerate(ts)))
    return [[e.ts for e in session] for session in split(state.events, rules)]


def sid(start: int) -> str:
    return session_id(USER, start)


def brief(summary: SessionSummary) -> tuple:
    return (summary.status, summary.revision, summary.session_id, summary.start, summary.end,
            summary.event_count)


# --- the greedy split -------------------------------------------------------------------

def test_split_of_no_events_is_empty() -> None:
    assert split([], RULES) == []


def test_gap_of_gap_ms_minus_one_stays_in_the_session() -> None:
    assert split_ts(0, 999) == [[0, 999]]


def test_gap_of_exactly_gap_ms_starts_a_new_session() -> None:
    assert split_ts(0, 1_000) == [[0], [1_000]]


def test_a_chain_of_short_gaps_is_one_session_however_long_the_chain_below_max() -> None:
    assert split_ts(0, 999, 1_998, 2_997, 3_996) == [[0, 999, 1_998, 2_997, 3_996]]


def test_equal_timestamps_stay_in_one_session() -> None:
    assert split_ts(10, 10, 10) == [[10, 10, 10]]


def test_event_at_max_length_minus_one_after_start_stays_in_the_session() -> None:
    assert split_ts(0, 999, 1_998, 2_997, 3_996, 4_995, 4_999) == [
        [0, 999, 1_998, 2_997, 3_996, 4_995, 4_999]
    ]


def test_event_at_exactly_max_length_after_start_starts_a_new_session() -> None:
    # 5_000 - 4_995 = 5 is far below the gap, but 5_000 - 0 reaches max_length_ms.
    assert split_ts(0, 999, 1_998, 2_997, 3_996, 4_995, 5_000) == [
        [0, 999, 1_998, 2_997, 3_996, 4_995], [5_000]
    ]


def test_max_length_is_measured_from_each_session_own_start() -> None:
    # events every 500 ms: sessions start at 0, 5_000 and 10_000.
    assert split_ts(*range(0, 12_000, 500)) == [
        list(range(0, 5_000, 500)),
        list(range(5_000, 10_000, 500)),
        list(range(10_000, 12_000, 500)),
    ]


def test_split_does_not_depend_on_insertion_order() -> None:
    ts = [0, 999, 1_998, 3_500, 3_600, 9_000]
    expected = [[0, 999, 1_998], [3_500, 3_600], [9_000]]
    for seed in range(20):
        shuffled = ts[:]
        random.Random(seed).shuffle(shuffled)
        state = state_with(*(ev(t) for t in shuffled))
        assert [[e.ts for e in s] for s in split(state.events, RULES)] == expected


# --- closes_at ----------------------------------------------------------------------------

def test_closes_at_is_bound_by_the_gap_for_a_short_session() -> None:
    (session,) = split(state_with(ev(0), ev(500)).events, RULES)
    assert closes_at(session, RULES) == 1_499  # min(500 + 1_000, 0 + 5_000) - 1


def test_closes_at_is_bound_by_max_length_for_a_long_session() -> None:
    (session,) = split(state_with(*(ev(t) for t in range(0, 5_000, 500))).events, RULES)
    assert closes_at(session, RULES) == 4_999  # min(4_500 + 1_000, 0 + 5_000) - 1


def test_closes_at_of_a_single_event_session() -> None:
    (session,) = split(state_with(ev(7_000)).events, RULES)
    assert closes_at(session, RULES) == 7_999


# --- deterministic session ids ----------------------------------------------------------

def test_session_id_depends_only_on_user_and_start() -> None:
    a = session_id("u1", 1_000)
    assert a == session_id("u1", 1_000)
    assert len(a) == 16 and all(c in "0123456789abcdef" for c in a)
    assert a != session_id("u1", 1_001)
    assert a != session_id("u2", 1_000)


def test_session_id_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = "from personalization.core.sessions import session_id; print(session_id('u1', 1000))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == session_id("u1", 1_000)


def test_emitted_session_id_is_the_id_of_user_and_first_event_time() -> None:
    state = state_with(ev(700, "x"), ev(300, "y"))
    (summary,) = advance(USER, state, RULES, watermark=END, end_of_input=True)
    assert summary.session_id == session_id(USER, 300)


# --- advance: closing ---------------------------------------------------------------------

def test_session_closes_exactly_when_the_watermark_reaches_closes_at() -> None:
    state = state_with(ev(0), ev(500))
    assert advance(USER, state, RULES, 1_498) == []
    assert state.closed_count == 0
    out = advance(USER, state, RULES, 1_499)
    assert [brief(s) for s in out] == [("closed", 1, sid(0), 0, 500, 2)]
    assert state.closed_count == 1


def test_long_session_closes_exactly_at_start_plus_max_length_minus_one() -> None:
    state = state_with(*(ev(t) for t in range(0, 5_000, 500)))
    assert advance(USER, state, RULES, 4_998) == []
    out = advance(USER, state, RULES, 4_999)
    assert [brief(s) for s in out] == [("closed", 1, sid(0), 0, 4_500, 10)]


def test_a_closed_session_is_not_emitted_again_when_nothing_changes() -> None:
    state = state_with(ev(0), ev(500))
    assert len(advance(USER, state, RULES, 1_499)) == 1
    assert advance(USER, state, RULES, 1_499) == []
    assert advance(USER, state, RULES, 2_000) == []
    assert state.closed_count == 1


def test_only_sessions_whose_closes_at_is_reached_are_emitted() -> None:
    state = state_with(ev(0), ev(2_000), ev(4_000))
    out = advance(USER, state, RULES, 2_999)  # closes_at: 999, 2_999, 4_999
    assert [brief(s) for s in out] == [
        ("closed", 1, sid(0), 0, 0, 1),
        ("closed", 1, sid(2_000), 2_000, 2_000, 1),
    ]


def test_end_of_input_closes_every_session_and_forgets_everything() -> None:
    state = state_with(ev(0), ev(3_000), ev(3_500))
    out = advance(USER, state, RULES, watermark=0, end_of_input=True)
    assert [brief(s) for s in out] == [
        ("closed", 1, sid(0), 0, 0, 1),
        ("closed", 1, sid(3_000), 3_000, 3_500, 2),
    ]
    assert state.events == []
    assert state.emitted == {}
    assert state.closed_count == 2
    assert next_deadline(state, RULES, 0) is None


def test_closed_summary_content() -> None:
    state = state_with(
        ev(1_000, "a", "page_view", category_id="c2", dwell_ms=1_200, scroll_depth=0.4),
        ev(1_400, "b", "product_view", item_id="i9", category_id="c1", scroll_depth=0.75),
        ev(1_600, "c", "product_view", item_id="i1", category_id="c2", dwell_ms=0),
        ev(1_900, "d", "add_to_cart", item_id="i9", dwell_ms=300),
        ev(2_200, "e", "purchase", item_id="i9"),
    )
    (summary,) = advance(USER, state, RULES, 3_199)
    assert summary == SessionSummary(
        session_id=sid(1_000), user_id=USER, status="closed", revision=1, start=1_000, end=2_200,
        event_count=5,
        counts={"add_to_cart": 1, "page_view": 1, "product_view": 2, "purchase": 1},
        max_scroll_depth=0.75, dwell_ms=1_500, items=("i1", "i9"), categories=("c1", "c2"),
        converted=True,
    )
    assert list(summary.counts) == ["add_to_cart", "page_view", "product_view", "purchase"]
    assert summary.duration_ms == 1_200
    assert summary.as_record() == {
        "session_id": sid(1_000), "user_id": USER, "status": "closed", "revision": 1,
        "start": 1_000, "end": 2_200, "duration_ms": 1_200, "event_count": 5,
        "counts": {"add_to_cart": 1, "page_view": 1, "product_view": 2, "purchase": 1},
        "max_scroll_depth": 0.75, "dwell_ms": 1_500, "items": ["i1", "i9"],
        "categories": ["c1", "c2"], "converted": True,
    }
    assert state.converted_count == 1


def test_session_without_purchase_is_not_converted() -> None:
    state = state_with(ev(0, etype="add_to_cart", item_id="i1"))
    (summary,) = advance(USER, state, RULES, 999)
    assert summary.converted is False
    assert summary.max_scroll_depth == 0.0 and summary.dwell_ms == 0
    assert state.converted_count == 0


def test_open_session_is_the_latest_session_until_it_is_emitted() -> None:
    state = SessionState()
    assert open_session(USER, state, RULES) is None
    add_event(state, ev(0))
    add_event(state, ev(3_000, dwell_ms=40))
    add_event(state, ev(3_200, scroll_depth=0.5))
    current = open_session(USER, state, RULES)
    assert current == OpenSession(sid(3_000), start=3_000, end=3_200, event_count=2, max_scroll_depth=0.5,
                                  dwell_ms=40, converted=False)
    advance(USER, state, RULES, 999)            # closes [0] only
    assert open_session(USER, state, RULES).session_id == sid(3_000)
    advance(USER, state, RULES, 4_199)          # closes [3_000, 3_200]
    assert open_session(USER, state, RULES) is None


# --- late events ------------------------------------------------------------------------

def test_late_event_bridging_two_emitted_sessions_updates_one_and_retracts_the_other() -> None:
    state = state_with(ev(0, etype="page_view"), ev(500, etype="click"),
                       ev(2_000, etype="product_view"), ev(2_300, etype="purchase"))
    out = advance(USER, state, RULES, 3_299)  # closes_at: 1_499 and 3_299
    assert [brief(s) for s in out] == [
        ("closed", 1, sid(0), 0, 500, 2),
        ("closed", 1, sid(2_000), 2_000, 2_300, 2),
    ]
    assert (state.closed_count, state.converted_count) == (2, 1)

    # 3_299 - 1_400 = 1_899 <= allowed lateness; 1_400 - 500 = 900 and 2_000 - 1_400 = 600 < gap.
    add_event(state, ev(1_400, etype="add_to_cart"))
    out = advance(USER, state, RULES, 3_299)
    assert [brief(s) for s in out] == [
        ("updated", 2, sid(0), 0, 2_300, 5),
        ("retracted", 2, sid(2_000), 2_000, 2_300, 2),
    ]
    updated, retracted = out
    assert updated.counts == {"add_to_cart": 1, "click": 1, "page_view": 1, "product_view": 1,
                              "purchase": 1}
    assert updated.converted is True
    # the retraction repeats the superseded content so consumers can undo it
    assert retracted.counts == {"product_view": 1, "purchase": 1}
    assert retracted.converted is True
    assert (state.closed_count, state.converted_count) == (1, 1)
    assert set(state.emitted) == {sid(0)}

    # another admissible late event inside the merged session: a further revision
    add_event(state, ev(1_300, etype="click"))  # 3_299 - 1_300 = 1_999 <= 2_000
    out = advance(USER, state, RULES, 3_299)
    assert [brief(s) for s in out] == [("updated", 3, sid(0), 0, 2_300, 6)]
    assert (state.closed_count, state.converted_count) == (1, 1)


def test_late_event_moving_the_start_earlier_retracts_the_old_id_and_closes_a_new_one() -> None:
    state = state_with(ev(1_000), ev(1_500, etype="purchase"))
    out = advance(USER, state, RULES, 2_499)
    assert [brief(s) for s in out] == [("closed", 1, sid(1_000), 1_000, 1_500, 2)]
    assert (state.closed_count, state.converted_count) == (1, 1)

    add_event(state, ev(600))  # 2_499 - 600 = 1_899 <= lateness; 1_000 - 600 = 400 < gap
    out = advance(USER, state, RULES, 2_499)
    assert [brief(s) for s in out] == [
        ("closed", 1, sid(600), 600, 1_500, 3),
        ("retracted", 2, sid(1_000), 1_000, 1_500, 2),
    ]
    assert out[0].converted is True
    assert (state.closed_count, state.converted_count) == (1, 1)
    assert set(state.emitted) == {sid(600)}


def test_late_event_that_does_not_touch_a_closed_session_only_adds_its_own() -> None:
    state = state_with(ev(0), ev(5_000))
    assert [brief(s) for s in advance(USER, state, RULES, 5_999)] == [
        ("closed", 1, sid(0), 0, 0, 1),
        ("closed", 1, sid(5_000), 5_000, 5_000, 1),
    ]
    add_event(state, ev(4_000))  # 5_999 - 4_000 = 1_999; gap to 0 and to 5_000 is >= 1_000
    assert [brief(s) for s in advance(USER, state, RULES, 5_999)] == [
        ("closed", 1, sid(4_000), 4_000, 4_000, 1),
    ]
    assert state.closed_count == 3


def test_revision_of_a_retracted_session_id_that_comes_back_keeps_increasing() -> None:
    """A session id can be retracted and later become a session again (the greedy split
    with a maximum length is not local). Its next emission must then carry a revision above
    the retraction's, or a consumer keeping the highest revision per session id keeps the
    retraction and loses the session."""
    rules = SessionRules(gap_ms=1_000, max_length_ms=2_500, allowed_lateness_ms=10_000)
    state = state_with(ev(0), ev(2_500))
    out = advance(USER, state, rules, 3_500)
    assert [brief(s) for s in out] == [
        ("closed", 1, sid(0), 0, 0, 1),
        ("closed", 1, sid(2_500), 2_500, 2_500, 1),
    ]
    add_event(state, ev(1_800))  # joins 2_500 (gap 700), moves its start to 1_800
    out = advance(USER, state, rules, 3_500)
    assert [brief(s) for s in out] == [
        ("closed", 1, sid(1_800), 1_800, 2_500, 2),
        ("retracted", 2, sid(2_500), 2_500, 2_500, 1),
    ]
    # 900 bridges 0 and 1_800; 2_500 - 0 reaches max length, so 2_500 starts a session again
    add_event(state, ev(900))
    out = advance(USER, state, rules, 3_500)
    by_id = {s.session_id: s for s in out}
    assert set(by_id) == {sid(0), sid(2_500), sid(1_800)}
    assert (by_id[sid(0)].status, by_id[sid(0)].revision, by_id[sid(0)].event_count) == (
        "updated", 2, 3)
    assert (by_id[sid(1_800)].status, by_id[sid(1_800)].revision) == ("retracted", 2)
    assert by_id[sid(2_500)].status in ("closed", "updated")
    assert by_id[sid(2_500)].revision > 2, (
        f"session {sid(2_500)} was retracted at revision 2 and re-emitted at revision "
        f"{by_id[sid(2_500)].revision}")
    assert (state.closed_count, state.converted_count) == (2, 0)


# --- finalization -------------------------------------------------------------------------

def test_events_are_kept_until_watermark_reaches_end_plus_gap_plus_lateness() -> None:
    state = state_with(ev(0), ev(500))
    assert len(advance(USER, state, RULES, 1_499)) == 1
    assert next_deadline(state, RULES, 1_499) == 3_500  # 500 + 1_000 + 2_000
    assert advance(USER, state, RULES, 3_499) == []
    assert [e.ts for e in state.events] == [0, 500]
    assert set(state.emitted) == {sid(0)}

    assert advance(USER, state, RULES, 3_500) == []
    assert state.events == []
    assert state.emitted == {}
    assert state.closed_count == 1  # forgotten sessions still count
    assert next_deadline(state, RULES, 3_500) is None


def test_after_finalization_the_earliest_admissible_event_starts_its_own_session() -> None:
    state = state_with(ev(0), ev(500, etype="purchase"))
    advance(USER, state, RULES, 1_499)
    advance(USER, state, RULES, 3_500)
    # the oldest event still admissible at watermark 3_500 has ts 3_500 - 2_000 = 1_500,
    # exactly one gap after the forgotten session's end: it cannot join it.
    add_event(state, ev(1_500))
    out = advance(USER, state, RULES, 3_500)
    assert [brief(s) for s in out] == [("closed", 1, sid(1_500), 1_500, 1_500, 1)]
    assert (state.closed_count, state.converted_count) == (2, 1)


def test_only_the_final_prefix_of_sessions_is_forgotten() -> None:
    state = state_with(ev(0), ev(2_000))
    out = advance(USER, state, RULES, 3_000)  # s1 final at 3_000, s2 closed (2_999), final at 5_000
    assert [brief(s) for s in out] == [
        ("closed", 1, sid(0), 0, 0, 1),
        ("closed", 1, sid(2_000), 2_000, 2_000, 1),
    ]
    assert [e.ts for e in state.events] == [2_000]
    assert set(state.emitted) == {sid(2_000)}
    assert state.closed_count == 2


def test_next_deadline_is_the_earliest_close_or_finalization_after_the_watermark() -> None:
    assert next_deadline(SessionState(), RULES, 0) is None
    state = state_with(ev(0), ev(3_000), ev(3_500))
    # deadlines: s1 close 999, final 3_000; s2 close 4_499, final 6_500
    assert next_deadline(state, RULES, 0) == 999
    assert next_deadline(state, RULES, 999) == 3_000
    assert next_deadline(state, RULES, 3_000) == 4_499
    assert next_deadline(state, RULES, 4_499) == 6_500
    assert next_deadline(state, RULES, 6_500) is None


# --- counters through many revisions --------------------------------------------------------

def net_sessions(emissions: list[SessionSummary]) -> dict[str, SessionSummary]:
    """Fold emissions the way a consumer keyed by session id would (last write wins)."""
    net: dict[str, SessionSummary] = {}
    for summary in emissions:
        if summary.status == "retracted":
            assert summary.session_id in net, "retraction of a session never emitted"
            del net[summary.session_id]
        else:
            net[summary.session_id] = summary
    return net


def content(summary: SessionSummary) -> tuple:
    return (summary.session_id, summary.start, summary.end, summary.event_count,
            tuple(summary.counts.items()), summary.max_scroll_depth, summary.dwell_ms,
            summary.items, summary.categories, summary.converted)


def random_admissible_run(rng: random.Random, rules: SessionRules, events: list[Event],
                          late: bool, reread: bool = False) -> tuple[list[SessionSummary], SessionState]:
    """Feed ``events`` in a random order with a monotone watermark; every event is admissible
    (watermark - ts <= allowed lateness when it arrives); ``late=False`` keeps the watermark
    below every event still to come. ``reread``: now and then the state is written and read
    back as the operator's state store does (the kept split is then rebuilt)."""
    order = events[:]
    rng.shuffle(order)
    state = SessionState()
    emissions: list[SessionSummary] = []
    watermark = -10**9
    for index, event in enumerate(order):
        if reread and rng.random() < 0.3:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=SessionState)
        add_event(state, event)
        remaining = [e.ts for e in order[index + 1:]]
        if remaining:
            low = min(remaining)
            ceiling = low + rules.allowed_lateness_ms if late else low - 1
            candidate = rng.randrange(low - 3_000, ceiling + 1)
            watermark = min(max(watermark, candidate), ceiling)
        emissions += advance(USER, state, rules, watermark)
    emissions += advance(USER, state, rules, END, end_of_input=True)
    return emissions, state


def sorted_run(rules: SessionRules, events: list[Event]) -> list[SessionSummary]:
    state = state_with(*sorted(events, key=lambda e: (e.ts, e.event_id)))
    return advance(USER, state, rules, END, end_of_input=True)


def random_events(rng: random.Random, span: int = 12_000, grid: int = 1) -> list[Event]:
    """1 to 13 events in [0, span), on multiples of ``grid`` (a coarse grid makes equal
    timestamps and exact-gap / exact-max-length boundaries frequent)."""
    return [
        ev(rng.randrange(0, span // grid) * grid, f"r{i}",
           rng.choice(("page_view", "click", "purchase")),
           scroll_depth=rng.choice((None, 0.25, 0.5)), dwell_ms=rng.choice((None, 10)))
        for i in range(rng.randrange(1, 14))
    ]


# a maximum length close to the gap makes late events reshuffle the max-length splits often
TIGHT = SessionRules(gap_ms=1_000, max_length_ms=1_500, allowed_lateness_ms=4_000)


@pytest.mark.parametrize("rules", [
    TIGHT, SessionRules(gap_ms=1_000, max_length_ms=3_000, allowed_lateness_ms=4_000)])
def test_with_admissible_late_events_the_net_sessions_and_counters_equal_the_sorted_feed(
        rules: SessionRules) -> None:
    for seed in range(600):
        rng = random.Random(seed)
        events = random_events(rng, span=6_000, grid=rng.choice((1, 300)))
        emissions, state = random_admissible_run(rng, rules, events, late=True)
        expected = sorted_run(rules, events)
        net = net_sessions(emissions)
        assert sorted(content(s) for s in net.values()) == sorted(content(s) for s in expected), seed
        assert state.closed_count == len(expected), seed
        assert state.converted_count == sum(s.converted for s in expected), seed
        assert state.events == [] and state.emitted == {}, seed


def test_state_read_back_between_steps_gives_the_same_net_sessions() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        events = random_events(rng, span=6_000, grid=rng.choice((1, 300)))
        emissions, state = random_admissible_run(rng, TIGHT, events, late=True, reread=True)
        expected = sorted_run(TIGHT, events)
        assert sorted(content(s) for s in net_sessions(emissions).values()) == sorted(
            content(s) for s in expected), seed
        assert state.closed_count == len(expected), seed


def test_the_kept_split_equals_a_fresh_split_after_every_insertion_and_advance() -> None:
    for seed in range(400):
        rng = random.Random(seed)
        rules = rng.choice((TIGHT, RULES))
        events = random_events(rng, span=8_000, grid=rng.choice((1, 250)))
        rng.shuffle(events)
        state = SessionState()
        state.split_of(rules)  # kept from the first event on
        watermark = -10**9
        for event in events:
            add_event(state, event)
            assert lengths(state.split_of(rules).starts, len(state.events)) == [
                len(s) for s in split(state.events, rules)], seed
            assert open_session(USER, state, rules) == fresh_open_session(state, rules), seed
            watermark = max(watermark, event.ts - rng.randrange(0, 4_000))
            advance(USER, state, rules, watermark)
            assert lengths(state.split_of(rules).starts, len(state.events)) == [
                len(s) for s in split(state.events, rules)], seed
            assert open_session(USER, state, rules) == fresh_open_session(state, rules), seed


def fresh_open_session(state: SessionState, rules: SessionRules) -> OpenSession | None:
    """The latest session from a split made now, if it was not emitted."""
    sessions = split(state.events, rules)
    if not sessions or sid(sessions[-1][0].ts) in state.emitted:
        return None
    s = summarize(USER, sessions[-1], "open", 0)
    return OpenSession(s.session_id, s.start, s.end, s.event_count, s.max_scroll_depth, s.dwell_ms, s.converted)


def lengths(starts: list[int], count: int) -> list[int]:
    return [end - begin for begin, end in zip(starts, [*starts[1:], count])]


def test_an_event_in_time_order_makes_one_greedy_decision_however_many_are_held(monkeypatch) -> None:
    decisions = []
    real = sessions_module._opens
    monkeypatch.setattr(sessions_module, "_opens", lambda *args: decisions.append(1) or real(*args))
    state = SessionState()
    state.split_of(RULES)
    for ts in range(0, 2_000 * 400, 400):  # one session of up to max_length, then the next
        decisions.clear()
        add_event(state, ev(ts))
        assert len(decisions) <= 1
    assert len(state.events) == 2_000


def test_revisions_of_a_session_id_strictly_increase_over_its_emissions() -> None:
    for seed in range(1_000):
        rng = random.Random(seed)
        events = random_events(rng, span=6_000, grid=300)
        emissions, _ = random_admissible_run(rng, TIGHT, events, late=True)
        last: dict[str, int] = {}
        for summary in emissions:
            previous = last.get(summary.session_id)
            assert previous is None or summary.revision > previous, (
                f"seed {seed}: {summary.session_id} {summary.status} revision "
                f"{summary.revision} after revision {previous}")
            last[summary.session_id] = summary.revision


# --- order independence without late events -----------------------------------------------

HAND_MADE = [
    # session 1: 0..900
    ev(0, "a1", "page_view", category_id="c1", dwell_ms=100),
    ev(400, "a2", "product_view", item_id="i1", category_id="c1", scroll_depth=0.5),
    ev(900, "a3", "click"),
    # session 2: gaps below 1_000 (3_999 - 3_000 = 999), ends before 2_500 + 5_000
    ev(2_500, "b1", "page_view"),
    ev(3_000, "b2", "product_view", item_id="i2", category_id="c2"),
    ev(3_999, "b3", "add_to_cart", item_id="i2", category_id="c2"),
    ev(4_500, "b4", "scroll", scroll_depth=0.9),
    ev(5_400, "b5", "click"),
    ev(6_300, "b6", "purchase", item_id="i2"),
    ev(7_200, "b7", "page_view", dwell_ms=50),
    # session 3: 7_600 is only 400 after 7_200 but 5_100 after 2_500 (max length)
    ev(7_600, "c1", "page_view", category_id="c3"),
    ev(8_000, "c2", "favorite", item_id="i3", category_id="c3"),
    # session 4: 1_500 after 8_000; two events at the same time; 10_499 is 999 later
    ev(9_500, "d1", "page_view"),
    ev(9_500, "d2", "click"),
    ev(10_499, "d3", "scroll", scroll_depth=0.25),
    # session 5: exactly one gap after 10_499
    ev(11_499, "e1", "purchase", item_id="i4"),
]


def closed(start, end, count, counts, items, categories, scroll, dwell, converted) -> SessionSummary:
    return SessionSummary(sid(start), USER, "closed", 1, start, end, count, counts, scroll, dwell,
                          items, categories, converted)


HAND_MADE_SESSIONS = [
    closed(0, 900, 3, {"click": 1, "page_view": 1, "product_view": 1}, ("i1",), ("c1",), 0.5, 100,
           False),
    closed(2_500, 7_200, 7, {"add_to_cart": 1, "click": 1, "page_view": 2, "product_view": 1,
                             "purchase": 1, "scroll": 1}, ("i2",), ("c2",), 0.9, 50, True),
    closed(7_600, 8_000, 2, {"favorite": 1, "page_view": 1}, ("i3",), ("c3",), 0.0, 0, False),
    closed(9_500, 10_499, 3, {"click": 1, "page_view": 1, "scroll": 1}, (), (), 0.25, 0, False),
    closed(11_499, 11_499, 1, {"purchase": 1}, ("i4",), (), 0.0, 0, True),
]


def test_sorted_feed_of_the_hand_made_set_gives_the_hand_derived_sessions() -> None:
    assert sorted_run(RULES, HAND_MADE) == HAND_MADE_SESSIONS


def test_sorted_feed_with_a_watermark_after_each_event_gives_the_same_sessions() -> None:
    state = SessionState()
    emissions: list[SessionSummary] = []
    ordered = sorted(HAND_MADE, key=lambda e: (e.ts, e.event_id))
    for index, event in enumerate(ordered):
        add_event(state, event)
        if index + 1 < len(ordered):
            emissions += advance(USER, state, RULES, ordered[index + 1].ts - 1)
    emissions += advance(USER, state, RULES, END, end_of_input=True)
    assert emissions == HAND_MADE_SESSIONS
    assert (state.closed_count, state.converted_count) == (5, 2)


def test_shuffled_feeds_without_late_events_emit_exactly_the_sorted_sessions() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        emissions, state = random_admissible_run(rng, RULES, HAND_MADE, late=False)
        assert emissions == HAND_MADE_SESSIONS, seed
        assert (state.closed_count, state.converted_count) == (5, 2), seed


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_random_sets_without_late_events_emit_only_first_revisions(seed: int) -> None:
    rules = SessionRules(gap_ms=1_000, max_length_ms=3_000, allowed_lateness_ms=4_000)
    for run in range(100):
        rng = random.Random(seed * 1_000 + run)
        events = random_events(rng)
        emissions, _ = random_admissible_run(rng, rules, events, late=False)
        assert emissions == sorted_run(rules, events)
