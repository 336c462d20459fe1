"""Identity stitching (personalization.core.identity and UserLogic.merge / hand_over).

Routing by the resolver is checked record by record; the merge is checked end to end with
``Job``, which does what the Flink job does in one process (resolver, then the user logic per
profile key, one watermark, timers), against a run where every event carried the user id.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from personalization.config.settings import DEFAULT_RULES
from personalization.core.events import Event
from personalization.core.identity import (
    ForgetLink, HandOver, IdentityRules, IdentityState, LinkIndex, Resolution, Stitch, is_link,
)
from personalization.core.privacy import DENIED, GRANTED, ConsentRules, ErasureRequest
from personalization.core.rules import RuleSet
from personalization.core.sessions import SessionRules
from personalization.core.user import END_OF_INPUT, UserLogic, UserState, add_anonymous_id
from personalization.udfs.keys import link_index_key, resolver_key, user_key

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T = 1_700_000_000_000
LOGIC = UserLogic(SessionRules(30 * MIN, 4 * HOUR, HOUR), (10 * MIN, HOUR, DAY, 7 * DAY, 30 * DAY), 60,
                  dedup_horizon_ms=DAY, top_categories=3).with_rules(RuleSet.load(DEFAULT_RULES))
RULES = IdentityRules(max_anonymous_events=3, allowed_lateness_ms=HOUR, consent=ConsentRules())


def anon(ts: int, eid: str, etype: str = "product_view", who: str = "a1", **fields) -> Event:
    return Event(eid, etype, ts, who, anonymous_id=who, **fields)


def link(ts: int, eid: str, user: str = "u1", who: str = "a1", etype: str = "page_view") -> Event:
    return Event(eid, etype, ts, user, anonymous_id=who)


# --- routing (the resolver) -----------------------------------------------------------------

def test_keys_resolver_by_anonymous_id_and_user_operator_by_profile() -> None:
    assert resolver_key(link(T, "e")) == "a1"
    assert resolver_key(Event("e", "click", T, "u1")) == "u1"
    assert user_key(link(T, "e")) == "u1"
    assert user_key(HandOver("a1", "u1")) == "a1"
    assert user_key(Stitch("u1", "a1", ())) == "u1"


def test_events_without_anonymous_id_pass_untouched() -> None:
    state, event = IdentityState(), Event("e", "click", T, "u1")
    assert RULES.route(state, event, T) == ([event], Resolution.KNOWN, False)
    assert state == IdentityState()


def test_anonymous_events_are_held_until_the_link_then_stitched_once() -> None:
    state = IdentityState()
    e1, e2 = anon(T, "e1"), anon(T + 1, "e2")
    assert RULES.route(state, e1, T) == ([e1], Resolution.ANONYMOUS, True)
    assert RULES.route(state, e2, T) == ([e2], Resolution.ANONYMOUS, True)
    assert state.held == [e1, e2]

    linking = link(T + 2, "e3")
    out, resolution, changed = RULES.route(state, linking, T)
    assert (resolution, changed) == (Resolution.LINKED, True)
    assert out == [HandOver("a1", "u1"),
                   Stitch("u1", "a1", (replace(e1, user_id="u1"), replace(e2, user_id="u1"))),
                   linking]
    assert state == IdentityState(linked_to="u1", held=[])

    # later: the same link moves nothing; anonymous events (even out of order) go to the user
    assert RULES.route(state, link(T + 3, "e4"), T) == ([link(T + 3, "e4")], Resolution.KNOWN, False)
    late = anon(T - 10 * MIN, "e5")
    assert RULES.route(state, late, T) == ([replace(late, user_id="u1")], Resolution.REKEYED, False)


def test_first_link_wins_a_link_to_another_user_is_a_conflict() -> None:
    state = IdentityState()
    RULES.route(state, link(T, "e1"), T)
    other = link(T + 1, "e2", user="u2")
    assert RULES.route(state, other, T) == ([other], Resolution.CONFLICT, False)  # to u2, moves nothing
    assert state.linked_to == "u1"
    assert RULES.route(state, anon(T + 2, "e3"), T).out[0].user_id == "u1"


def test_a_link_as_first_event_stitches_nothing_but_hands_over() -> None:
    out, resolution, _ = RULES.route(IdentityState(), link(T, "e1"), T)
    assert resolution is Resolution.LINKED
    assert out == [HandOver("a1", "u1"), Stitch("u1", "a1", ()), link(T, "e1")]


def test_an_anonymous_id_with_too_many_events_is_never_stitched() -> None:
    state = IdentityState()
    for i in range(3):
        RULES.route(state, anon(T + i, f"e{i}"), T)
    assert len(state.held) == 3
    assert RULES.route(state, anon(T + 3, "e3"), T).changed  # the 4th: over max_anonymous_events=3
    assert state == IdentityState(overflowed=True)
    linking = link(T + 4, "e4")
    assert RULES.route(state, linking, T) == ([linking], Resolution.UNSTITCHED, False)
    assert RULES.route(state, anon(T + 5, "e5"), T).out[0].user_id == "a1"  # stays on its own profile


def test_events_beyond_the_allowed_lateness_are_not_held() -> None:
    state = IdentityState()
    too_late = anon(T - HOUR - 1, "e1")
    assert RULES.route(state, too_late, T) == ([too_late], Resolution.ANONYMOUS, False)
    assert state.held == []


def test_a_profile_lists_at_most_the_limit_of_anonymous_ids_oldest_dropped() -> None:
    ids: list[str] = []
    assert add_anonymous_id(ids, "a1", 2) == []
    assert add_anonymous_id(ids, "a2", 2) == []
    assert add_anonymous_id(ids, "a1", 2) == []  # already listed
    assert add_anonymous_id(ids, "a3", 2) == ["a1"]
    assert ids == ["a2", "a3"]


# --- consent and erasure at the resolver -----------------------------------------------------

def test_keys_of_erasures_are_the_ids_they_name() -> None:
    request = ErasureRequest("u1", "r1", T)
    assert resolver_key(request) == user_key(request) == link_index_key(request) == "u1"
    forget = ForgetLink("a1", request)
    assert resolver_key(forget) == user_key(forget) == "a1"
    assert link_index_key(link(T, "e")) == "u1" and is_link(link(T, "e"))
    assert not is_link(anon(T, "e")) and not is_link(Event("e", "click", T, "u1"))


def test_a_denial_drops_what_is_held_and_nothing_is_held_until_a_grant() -> None:
    state = IdentityState()
    e1, e2 = anon(T, "e1"), anon(T + 1, "e2")
    RULES.route(state, e1, T), RULES.route(state, e2, T)
    denial = anon(T + 2, "e3", consent=DENIED)
    assert RULES.route(state, denial, T) == ([denial], Resolution.NO_CONSENT, True)
    assert state == IdentityState(consent=DENIED)
    silent = anon(T + 3, "e4")  # no field: the recorded denial holds
    assert RULES.route(state, silent, T) == ([silent], Resolution.NO_CONSENT, False)
    grant, e6 = anon(T + 4, "e5", consent=GRANTED), anon(T + 5, "e6")
    RULES.route(state, grant, T), RULES.route(state, e6, T)
    out, resolution, _ = RULES.route(state, link(T + 6, "login"), T)
    assert resolution is Resolution.LINKED
    assert out[1] == Stitch("u1", "a1", (replace(grant, user_id="u1"), replace(e6, user_id="u1")))


def test_with_a_denying_default_only_events_stating_a_grant_and_after_are_held() -> None:
    rules = replace(RULES, consent=ConsentRules(DENIED))
    state = IdentityState()
    assert rules.route(state, anon(T, "e1"), T).resolution is Resolution.NO_CONSENT
    assert state == IdentityState()  # nothing recorded: only the default said no
    rules.route(state, anon(T + 1, "e2", consent=GRANTED), T), rules.route(state, anon(T + 2, "e3"), T)
    assert [e.event_id for e in state.held] == ["e2", "e3"]


@given(st.lists(st.sampled_from([None, GRANTED, DENIED]), max_size=12), st.sampled_from([GRANTED, DENIED]))
def test_the_resolver_holds_exactly_the_events_the_user_operator_profiles(statements, default) -> None:
    """Same rule, same events, same order: held = the profiled events since the last one that was not."""
    rules, consent = IdentityRules(100, HOUR, ConsentRules(default)), ConsentRules(default)
    state, stored, expected = IdentityState(), None, []
    for n, stated in enumerate(statements):
        event = anon(T + n, f"e{n}", consent=stated)
        rules.route(state, event, T)
        admission = consent.admit(stored, event, LOGIC.new_state)  # the user operator's decision
        stored = admission.keep
        expected = [*expected, event] if admission.state is not None else []
    assert state.held == expected


def test_an_erasure_forgets_held_events_and_the_link_and_later_events_resurrect_nothing() -> None:
    state = IdentityState()
    RULES.route(state, anon(T, "e1"), T)
    request = ErasureRequest("a1", "r1", T)
    assert RULES.erase(state, request) == ([request], Resolution.ERASED, True)
    assert state == IdentityState(consent=DENIED)
    later = anon(T + 1, "e2")
    assert RULES.route(state, later, T) == ([later], Resolution.NO_CONSENT, False)
    out, resolution, _ = RULES.route(state, link(T + 2, "login"), T)  # a later login merges nothing old
    assert resolution is Resolution.LINKED and out[1] == Stitch("u1", "a1", ())


def test_a_users_erasure_forgets_the_anonymous_ids_stitched_to_them_only() -> None:
    request = ErasureRequest("u1", "r1", T)
    mine, other, unlinked = IdentityState(), IdentityState(), IdentityState()
    RULES.route(mine, link(T, "e1"), T)
    RULES.route(other, link(T, "e2", user="u0", who="a2"), T)  # first linked to u0
    forget = ForgetLink("a1", request)
    assert RULES.erase(mine, forget) == ([forget], Resolution.ERASED, True)
    assert mine == IdentityState(consent=DENIED)
    assert RULES.route(mine, anon(T + 1, "e3"), T).out[0].user_id == "a1"  # no longer re-keyed to u1
    assert RULES.erase(other, ForgetLink("a2", request)) == ([], Resolution.NOT_STITCHED_TO, False)
    assert other.linked_to == "u0"
    # not linked (yet, or never stitched: too many events): the anonymous id is the user's own
    assert RULES.erase(unlinked, ForgetLink("a3", request)).resolution is Resolution.ERASED


def test_the_link_index_fans_a_users_erasure_out_to_each_anonymous_id_once() -> None:
    index = LinkIndex()
    assert index.note(link(T, "e1")) and index.note(link(T, "e2", who="a2"))
    assert not index.note(link(T + 1, "e3"))  # already known
    request = ErasureRequest("u1", "r1", T)
    assert index.fan_out(request) == [request, ForgetLink("a1", request), ForgetLink("a2", request)]
    assert LinkIndex().fan_out(request) == [request]


# --- the merge, end to end in one process -----------------------------------------------------

class Job:
    """Resolver + user logic per profile key, with one watermark, as the Flink job wires them."""

    def __init__(self, rules: IdentityRules = IdentityRules(100, HOUR, ConsentRules()), max_ids: int = 10) -> None:
        self.rules, self.max_ids = rules, max_ids
        self.identities: dict[str, IdentityState] = {}
        self.users: dict[str, UserState] = {}
        self.timers: dict[str, int] = {}
        self.watermark = -(2**63)
        self.sessions: list[dict] = []
        self.changes: list[dict] = []
        self.aliases: dict[str, str] = {}
        self.unlisted: list[str] = []

    def send(self, *events: Event) -> None:
        for event in events:
            state = self.identities.setdefault(resolver_key(event), IdentityState())
            for item in self.rules.route(state, event, self.watermark).out:
                self._user(item)

    def advance(self, watermark: int) -> None:
        self.watermark = watermark
        for key, due in sorted(self.timers.items()):
            if due <= watermark and key in self.users:
                del self.timers[key]
                self._take(key, LOGIC.on_timer(self.users[key], watermark, watermark))

    def end(self) -> None:
        self.advance(END_OF_INPUT)
        for key in list(self.users):
            self._take(key, LOGIC.on_timer(self.users[key], END_OF_INPUT, self.watermark))

    def profile(self, key: str) -> dict:
        return LOGIC.profile(self.users[key])

    def _user(self, item) -> None:
        key = user_key(item)
        if isinstance(item, HandOver):
            state = self.users.pop(key, None)
            if state is not None:
                self._take(key, LOGIC.hand_over(state, item.user_id))
            self.timers.pop(key, None)
            self.aliases[key] = item.user_id
            return
        state = self.users.setdefault(key, LOGIC.new_state(key))
        if isinstance(item, Stitch):
            result, dropped = LOGIC.merge(state, item.anonymous_id, item.events, self.watermark, self.max_ids)
            self.unlisted += dropped
        else:
            result = LOGIC.on_event(state, item, self.watermark)
        self._take(key, result)

    def _take(self, key: str, result) -> None:
        self.sessions += [s.as_record() for s in result.sessions]
        self.changes += [c.as_record() for c in result.changes]
        if result.next_timer is not None:
            self.timers[key] = min(self.timers.get(key, result.next_timer), result.next_timer)


# An anonymous visitor: a session of 4 product views an hour before (closed and emitted before
# the link), then a visit with 3 more views (high_intent) in which they log in; after the link a
# late anonymous event of the first visit and events with the user id only.
BEFORE = [anon(T + i * MIN, f"a-{i}", category_id="c1", dwell_ms=1_000 * i) for i in range(4)]
VISIT = [anon(T + 2 * HOUR + i * MIN, f"b-{i}", category_id="c2") for i in range(3)]
LINK = link(T + 2 * HOUR + 4 * MIN, "login")
AFTER = [anon(T + 2 * HOUR + 30_000, "a-late"), Event("u-1", "add_to_cart", T + 2 * HOUR + 6 * MIN, "u1", category_id="c2"),
         Event("u-2", "purchase", T + 2 * HOUR + 7 * MIN, "u1", category_id="c2")]


def stitched_run() -> Job:
    job = Job()
    for event in BEFORE:
        job.send(event)
    job.advance(T + 2 * HOUR - MIN)  # the first visit closed (gap 30 min)
    for event in VISIT:
        job.send(event)
    job.advance(VISIT[-1].ts)  # the visit's events released to the rules: high_intent
    job.send(LINK)
    job.advance(LINK.ts)
    job.send(*AFTER)
    job.end()
    return job


def user_id_run() -> Job:
    job = Job()
    as_user = [replace(e, user_id="u1", anonymous_id=None) for e in BEFORE]
    job.send(*as_user)
    job.advance(T + 2 * HOUR - MIN)
    job.send(*[replace(e, user_id="u1", anonymous_id=None) for e in VISIT])
    job.advance(VISIT[-1].ts)
    job.send(replace(LINK, anonymous_id=None))
    job.advance(LINK.ts)
    job.send(*[replace(e, user_id="u1", anonymous_id=None) for e in AFTER])
    job.end()
    return job


def test_the_anonymous_profile_before_the_link() -> None:
    job = Job()
    job.send(*BEFORE)
    job.advance(T + 2 * HOUR - MIN)
    job.send(*VISIT)
    job.advance(VISIT[-1].ts)
    profile = job.profile("a1")
    assert (profile["user_id"], profile["events_total"], profile["sessions_closed"]) == ("a1", 7, 1)
    assert "high_intent" in profile["segments"]
    assert [s["user_id"] for s in job.sessions] == ["a1"]
    assert set(job.users) == {"a1"}


def test_the_merged_profile_equals_the_run_with_the_user_id_from_the_start() -> None:
    stitched, plain = stitched_run(), user_id_run()
    assert set(stitched.users) == {"u1"}  # the anonymous state is gone
    assert stitched.aliases == {"a1": "u1"}
    merged, expected = stitched.profile("u1"), plain.profile("u1")
    assert merged["anonymous_ids"] == ["a1"] and expected["anonymous_ids"] == []
    assert merged["events_total"] == 11 and merged["sessions_closed"] == 2
    assert merged["counts"] == {"add_to_cart": 1, "page_view": 1, "product_view": 8, "purchase": 1}
    # What legitimately differs: the version (the stitch is a step of its own, and the anonymous
    # profile's steps are not replayed) and the list of stitched ids. Everything else is equal.
    differs = {"version", "anonymous_ids"}
    assert {k: v for k, v in merged.items() if k not in differs} == \
           {k: v for k, v in expected.items() if k not in differs}


def test_sessions_the_anonymous_id_emitted_stay_and_the_user_gets_the_same_sessions_as_from_the_start() -> None:
    stitched, plain = stitched_run(), user_id_run()
    anonymous = [s for s in stitched.sessions if s["user_id"] == "a1"]
    assert [(s["status"], s["start"], s["event_count"]) for s in anonymous] == [("closed", T, 4)]
    mine = [s for s in stitched.sessions if s["user_id"] == "u1"]
    # the user's sessions are those of the run with the user id from the start, as the end
    # state of each session id (the stitched run closes the first visit later, at the stitch,
    # and re-opens it when the late event arrives)
    final = lambda sessions: {s["session_id"]: s for s in sessions}
    assert final(mine) == final(plain.sessions)
    assert len(final(mine)) == 2


def test_the_hand_over_leaves_every_segment_of_the_anonymous_profile() -> None:
    stitched = stitched_run()
    mine = [c for c in stitched.changes if c["user_id"] == "a1"]
    last = mine[-2:]
    assert [(c["segment"], c["action"], c["cause"], c["event_time"]) for c in last] == [
        ("casual_browser", "exit", {"rule": "identity.merged", "features": {"user_id": "u1"}}, VISIT[-1].ts),
        ("high_intent", "exit", {"rule": "identity.merged", "features": {"user_id": "u1"}}, VISIT[-1].ts)]
    assert [c["seq"] for c in mine] == list(range(1, len(mine) + 1))  # numbered on with the profile's changes
    members = set()
    for c in mine:
        (members.add if c["action"] == "enter" else members.discard)(c["segment"])
    assert members == set()  # the anonymous id is in no audience any more


def test_an_event_sent_under_both_ids_counts_once() -> None:
    job = Job()
    job.send(anon(T, "dup"), anon(T + MIN, "a-2"))
    job.send(link(T + 2 * MIN, "login"), replace(anon(T, "dup"), user_id="u1"))  # re-sent after login
    job.end()
    assert job.profile("u1")["events_total"] == 3


def test_a_second_anonymous_id_merges_too_and_the_oldest_beyond_the_limit_is_unlisted() -> None:
    job = Job(max_ids=2)
    for n, who in enumerate(("a1", "a2", "a3")):
        job.send(anon(T + n * MIN, f"{who}-e", who=who), link(T + n * MIN + 1, f"{who}-login", who=who))
    profile = job.profile("u1")
    assert profile["anonymous_ids"] == ["a2", "a3"]
    assert job.unlisted == ["a1"]
    assert profile["events_total"] == 6
    assert set(job.users) == {"u1"}
    job.send(anon(T + 10 * MIN, "a1-later", who="a1"))  # unlisted, still routed to the user
    assert job.profile("u1")["events_total"] == 7
