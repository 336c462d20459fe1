"""Segments on the real stack (Kafka, Flink MiniCluster, Redis), with the shipped rules/default.yaml.

Two job runs serve the whole module:

1. ``live``: unbounded, one partition, 1 s out-of-orderness. One sorted stream holds a scenario per
   user (every default rule entered and left, a timed trigger firing on the watermark and one
   cancelled by a purchase, hysteresis, hierarchy and primary segment); a "clock" user's events
   move the watermark. Then, on the same running job: an invalid rules update (rejected to the
   DLQ, the job carries on) and a valid one (applied: later changes carry its version, a removed
   segment is left). Asserted: the exact change events on the ``segment-changes`` topic, the same
   changes in the Redis stream, the audience sets and the profiles.
2. ``replay``: bounded, the real Taobao slice; the members of every segment whose outcome does
   not hang on a timer that can fire within the slice (and of high_intent, whose 30-minute lapse
   does, computed too) equal an independent DuckDB computation of the same rules.
"""

from __future__ import annotations

import subprocess

import duckdb
import pytest

from personalization.config.settings import DEFAULT_RULES as DEFAULT_RULES_FILE
from personalization.config.settings import REPO_ROOT
from personalization.tools.rules import publish
from personalization.topics.records import read_topic
from personalization.replay.producer import produce
from personalization.serving.reader import ProfileReader
from tests.support import PZ, dead_letters, isolated_settings, replayed_run, start_job, wait_until

T = 1_511_658_000_000  # 2017-11-26 01:00:00 UTC, a multiple of every bucket width below 12 h
S = 1_000
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
WEEK = 7 * DAY
DEFAULT_RULES = DEFAULT_RULES_FILE.read_text()


def ev(user: str, event_type: str, ts: int, eid: str | None = None, **fields) -> dict:
    return {"schema_version": 1, "event_id": eid or f"{user}-{event_type}-{ts - T}", "event_type": event_type,
            "ts": ts, "user_id": user, **fields}


def views(user: str, *offsets: int) -> list[dict]:
    return [ev(user, "product_view", T + offset) for offset in offsets]


def pages(user: str, *offsets: int) -> list[dict]:
    return [ev(user, "page_view", T + offset) for offset in offsets]


def purchases(user: str, count: int, at: int) -> list[dict]:
    return [ev(user, "purchase", T + at, eid=f"{user}-buy-{i:02d}") for i in range(1, count + 1)]


# --- scenarios: one user each ------------------------------------------------------------------

SCENARIOS = [
    # high_intent by its rules: 3 product views in 10 min enter; at 12:10 none is left in the window
    *views("hi", 0, 1 * MIN, 2 * MIN), *pages("hi", 12 * MIN + 10 * S),
    # high_intent left by its timed trigger: 30 min without any event
    *views("hl", 0, 1 * MIN, 2 * MIN),
    # hysteresis: the 10-min count goes 1 2 3 | 3 3 3 2 3 2 | 1 | 2 3 (enter at 3, exit at 1)
    *views("hy", 0, 1 * MIN, 2 * MIN, 10 * MIN + 5 * S, 11 * MIN + 5 * S), *pages("hy", 11 * MIN + 30 * S),
    *pages("hy", 12 * MIN + 30 * S), *views("hy", 12 * MIN + 40 * S), *pages("hy", 20 * MIN + 10 * S),
    *pages("hy", 21 * MIN + 10 * S), *views("hy", 21 * MIN + 20 * S, 21 * MIN + 30 * S),
    # engaged_reader: scrolled past 80 % and over 3 min in one session; left after a visit of
    # over a minute without scrolling past half a page
    ev("er", "scroll", T, scroll_depth=0.9, dwell_ms=100_000), ev("er", "page_view", T + MIN, dwell_ms=90_000),
    ev("er", "page_view", T + 2 * HOUR, dwell_ms=70_000),
    # cart_abandoner: entered on the watermark 24 h after the add_to_cart, left by the purchase
    ev("ca", "add_to_cart", T), ev("ca", "purchase", T + 25 * HOUR),
    # ... and cancelled by a purchase within the 24 h
    ev("cc", "add_to_cart", T), ev("cc", "purchase", T + HOUR),
    # engaged (score >= 20) and engaged_buyer (> 3 purchases in 30 d), left by their exit rules
    *purchases("eb", 4, 0), *pages("eb", 13 * DAY, 26 * DAY, 31 * DAY),
    # loyal_customer (child of engaged_buyer): entered with 10 purchases; left with its parent
    # when buyer_lapsed fires after 30 days without events (went_quiet leaves engaged at 14 d)
    *purchases("lc", 10, 0),
    # ... and one who stays: primary segment = the highest priority held
    *purchases("lp", 10, 31 * DAY - HOUR),
    # casual_browser: every user's first event enters it; 8 pages (page or product views) in one
    # session leave it: 8 page views here, and hy's 8th view above
    *pages("cb", *(i * MIN for i in range(8))),
    # the clock: moves the watermark (1 s behind the latest event) past every deadline above
    *pages("zz-clock", 3 * HOUR, DAY + 10 * MIN, 30 * DAY + HOUR, 31 * DAY + 2 * HOUR),
]
STREAM = sorted(SCENARIOS, key=lambda e: (e["ts"], e["event_id"]))


def enter(segment: str, rule: str, features: dict, at: int) -> tuple:
    return (segment, "enter", rule, features, T + at)


def leave(segment: str, rule: str, features: dict, at: int) -> tuple:
    return (segment, "exit", rule, features, T + at)


def casual(views: int = 0) -> tuple:
    return enter("casual_browser", "casual_browser.entry", {"views_7d": views, "sessions_7d": 1}, 0)


def engagement(value: float, days: float) -> float:
    return round(value * 0.5 ** (days * DAY / WEEK), 6)


EXPECTED = {
    "hi": [casual(views=1), enter("high_intent", "high_intent.entry", {"product_views_10m": 3}, 2 * MIN),
           leave("high_intent", "high_intent.exit", {"product_views_10m": 0}, 12 * MIN + 10 * S)],
    "hl": [casual(views=1), enter("high_intent", "high_intent.entry", {"product_views_10m": 3}, 2 * MIN),
           leave("high_intent", "high_intent_lapsed", {}, 32 * MIN)],
    "hy": [casual(views=1), enter("high_intent", "high_intent.entry", {"product_views_10m": 3}, 2 * MIN),
           leave("casual_browser", "casual_browser.exit", {"views_7d": 8, "sessions_7d": 1}, 12 * MIN + 40 * S),
           leave("high_intent", "high_intent.exit", {"product_views_10m": 1}, 21 * MIN + 10 * S),
           enter("high_intent", "high_intent.entry", {"product_views_10m": 3}, 21 * MIN + 30 * S),
           leave("high_intent", "high_intent_lapsed", {}, 51 * MIN + 30 * S)],
    "er": [casual(), enter("engaged_reader", "engaged_reader.entry",
                           {"dwell_ms_session": 190_000, "max_scroll_session": 0.9}, MIN),
           leave("engaged_reader", "engaged_reader.exit", {"dwell_ms_session": 70_000, "max_scroll_session": 0},
                 2 * HOUR)],
    "ca": [casual(), enter("cart_abandoner", "cart_abandoned", {}, DAY),
           leave("cart_abandoner", "cart_recovered", {}, 25 * HOUR)],
    "cc": [casual()],
    "eb": [casual(), enter("engaged", "engaged.entry", {"engagement": 20.0}, 0),
           enter("engaged_buyer", "engaged_buyer.entry", {"purchases_30d": 4}, 0),
           leave("engaged", "engaged.exit", {"engagement": engagement(40, 26)}, 26 * DAY),
           leave("engaged_buyer", "engaged_buyer.exit", {"purchases_30d": 0}, 31 * DAY)],
    "lc": [casual(), enter("engaged", "engaged.entry", {"engagement": 20.0}, 0),
           enter("engaged_buyer", "engaged_buyer.entry", {"purchases_30d": 4}, 0),
           enter("loyal_customer", "loyal_customer.entry", {"engagement": 100.0, "purchases_lifetime": 10}, 0),
           leave("engaged", "went_quiet", {}, 14 * DAY),
           leave("engaged_buyer", "buyer_lapsed", {}, 30 * DAY),
           leave("loyal_customer", "buyer_lapsed", {}, 30 * DAY)],
    "lp": [("casual_browser", "enter", "casual_browser.entry", {"views_7d": 0, "sessions_7d": 1}, T + 31 * DAY - HOUR),
           enter("engaged", "engaged.entry", {"engagement": 20.0}, 31 * DAY - HOUR),
           enter("engaged_buyer", "engaged_buyer.entry", {"purchases_30d": 4}, 31 * DAY - HOUR),
           enter("loyal_customer", "loyal_customer.entry", {"engagement": 100.0, "purchases_lifetime": 10},
                 31 * DAY - HOUR)],
    "cb": [casual(views=1),
           leave("casual_browser", "casual_browser.exit", {"views_7d": 8, "sessions_7d": 1}, 7 * MIN)],
}
END_MEMBERS = {  # after the scenarios (before the rules updates)
    "casual_browser": {"hi", "hl", "er", "ca", "cc", "eb", "lc", "lp"},
    "engaged": {"lp"}, "engaged_buyer": {"lp"}, "loyal_customer": {"lp"},
}

# --- rules updates -----------------------------------------------------------------------------

INVALID_RULES = DEFAULT_RULES.replace("entry: product_views_10m >= 3", "entry: product_view_10m >= 3")
INVALID_LINE = DEFAULT_RULES.splitlines().index("    entry: product_views_10m >= 3") + 1
CASUAL_BLOCK = """  casual_browser:
    entry: sessions_7d < 2 and views_7d < 5 * sessions_7d
    exit: sessions_7d >= 3 or views_7d >= 8 * sessions_7d
    priority: 10
"""
assert CASUAL_BLOCK in DEFAULT_RULES
RULES_V2 = (DEFAULT_RULES.replace('version: "default-2"', 'version: "default-3"')
            .replace("entry: product_views_10m >= 3", "entry: product_views_10m >= 2")
            .replace(CASUAL_BLOCK, ""))
AFTER = 40 * DAY  # phase 2 starts after everything above


def changes_of(records: list[dict], user: str, first_seq: int = 1) -> list[tuple]:
    mine = sorted((r for r in records if r["user_id"] == user), key=lambda r: r["seq"])
    assert [r["seq"] for r in mine] == list(range(first_seq, first_seq + len(mine)))  # each once, in order
    return [(r["segment"], r["action"], r["cause"]["rule"], r["cause"]["features"], r["event_time"]) for r in mine]


def _changes_topic(settings) -> list[dict]:
    return read_topic(settings, settings.kafka.topics.segment_changes, 1000)


@pytest.fixture(scope="module")
def live(stack, tmp_path_factory):
    settings = isolated_settings(tmp_path_factory.mktemp("segments-live"),
                                 kafka={"bounded": False, "topics": {"partitions": 1}},
                                 time={"out_of_orderness": 1_000})
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.topics.events
    reader = ProfileReader.from_settings(settings)
    client = start_job(settings)
    try:
        produce(STREAM, bootstrap, topic, progress=False)
        total = sum(len(changes) for changes in EXPECTED.values())
        wait_until(lambda: len([r for r in _changes_topic(settings) if r["user_id"] in EXPECTED]) >= total,
                   120, f"the {total} expected segment changes")
        before_updates = {
            "changes": _changes_topic(settings),
            "stream": [record for _, record in reader.changes()],
            "members": {segment: reader.members(segment) - {"zz-clock"} for segment in reader.segment_sizes()},
            "profiles": {user: reader.get(user) for user in EXPECTED},
        }

        publish(settings, INVALID_RULES)
        dlq = wait_until(lambda: dead_letters(settings), 60,
                         "the invalid rules in the DLQ")
        publish(settings, RULES_V2)
        probe = iter(range(1, 1_000))

        def applied() -> bool:  # each probe is a new user: its profile names the rules it got
            user = f"probe-{next(probe)}"
            produce([ev(user, "page_view", T + 35 * DAY)], bootstrap, topic, progress=False)
            found = wait_until(lambda: reader.get(user), 30, f"{user}'s profile")
            return found["rules_version"] == "default-3"

        wait_until(applied, 60, "the rules update to be applied", interval_s=0.5)
        produce([*views("hu", AFTER, AFTER + MIN), *pages("hi", AFTER + 2 * MIN),
                 *pages("zz-clock", AFTER + 10 * MIN)], bootstrap, topic, progress=False)

        def under_v2() -> list[dict] | None:
            found = [r for r in _changes_topic(settings) if r["rules_version"] == "default-3"
                     and r["user_id"] in ("hu", "hi")]
            return found if len(found) >= 2 else None

        after = wait_until(under_v2, 60, "the changes under the new rules")
        assert not client.get_job_execution_result().done(), "the job stopped"
        return {"settings": settings, "reader": reader, "dlq": dlq, "after": after,
                "late": read_topic(settings, settings.kafka.topics.late, 500), **before_updates}
    finally:
        client.cancel().result()


@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_each_scenario_gives_exactly_its_segment_changes_in_event_time(live, user):
    assert changes_of(live["changes"], user) == EXPECTED[user]


def test_every_change_record_carries_user_rule_features_time_rules_version_and_seq(live):
    record = next(r for r in live["changes"] if r["user_id"] == "er" and r["segment"] == "engaged_reader")
    assert record == {"user_id": "er", "segment": "engaged_reader", "action": "enter",
                      "cause": {"rule": "engaged_reader.entry",
                                "features": {"dwell_ms_session": 190_000, "max_scroll_session": 0.9}},
                      "event_time": T + MIN, "rules_version": "default-2", "seq": 2}
    assert live["late"] == []


def test_the_redis_stream_holds_the_same_changes_once(live):
    stream = sorted(live["stream"], key=lambda r: (r["user_id"], r["seq"]))
    assert stream == sorted(live["changes"], key=lambda r: (r["user_id"], r["seq"]))


def test_audience_sets_hold_the_current_members(live):
    assert {segment: members for segment, members in live["members"].items() if members} == END_MEMBERS


def test_profiles_hold_segments_primary_segment_and_scores(live):
    profiles = live["profiles"]
    assert profiles["lp"]["segments"] == {name: T + 31 * DAY - HOUR for name in
                                          ("casual_browser", "engaged", "engaged_buyer", "loyal_customer")}
    assert profiles["lp"]["primary_segment"] == "loyal_customer"  # priority 60 over 50, 20, 10
    assert profiles["lp"]["scores"] == {"engagement": 100.0}
    assert (profiles["lc"]["segments"], profiles["lc"]["primary_segment"]) == ({"casual_browser": T}, "casual_browser")
    assert profiles["lc"]["scores"] == {"engagement": 100.0}  # as of its latest event: no decay yet
    assert (profiles["cb"]["segments"], profiles["cb"]["primary_segment"]) == ({}, None)
    assert profiles["eb"]["scores"] == {"engagement": engagement(40, 31)}
    assert profiles["eb"]["rules_version"] == "default-2"


def test_an_invalid_rules_update_is_rejected_to_the_dlq_and_the_job_carries_on(live):
    letter, = live["dlq"]
    assert letter.reason == "invalid_rules"
    assert letter.detail == (f"rules topic:{INVALID_LINE}: segment 'high_intent' entry: unknown feature or "
                             "score 'product_view_10m' (did you mean 'product_views_10m'?)")
    assert letter.value == INVALID_RULES.encode()
    assert letter.topic == live["settings"].kafka.topics.rules
    assert dict(letter.extra) == {"running_rules_version": "default-2"}


def test_a_valid_rules_update_applies_to_later_changes_and_removed_segments_are_left(live):
    assert changes_of(live["after"], "hu") == [
        enter("high_intent", "high_intent.entry", {"product_views_10m": 2}, AFTER + MIN)]  # 2 now enter
    assert changes_of(live["after"], "hi", first_seq=len(EXPECTED["hi"]) + 1) == [
        # decided at hi's next event, at the rules' clock for hi (its latest event given to them)
        leave("casual_browser", "casual_browser.removed", {}, 12 * MIN + 10 * S)]
    reader = live["reader"]
    assert "hi" not in reader.members("casual_browser")
    assert reader.segments("hi") == {"segments": {}, "primary_segment": None, "scores": {"engagement": 0.0},
                                     "rules_version": "default-3"}
    assert reader.segments("hu")["segments"] == {"high_intent": T + AFTER + MIN}


# --- the real dataset against an independent computation ---------------------------------------

SLICE = 20_000  # 353 members in high_intent and 110 in engaged_reader: over the 100 asserted below


def oracle_members(events: list[dict], gap_ms: int, final_watermark: int) -> dict[str, set[str]]:
    """Members of each default segment at the end of a sorted replay, computed in SQL from the
    rules' text (not from the job's code). Every step (an event, in time then id order) reads
    the features over the events up to it; a segment's membership is decided by the last step
    at which its entry or its exit holds (the two never hold together). Within a 2 h slice the
    7 d and 30 d windows hold everything, 14 d / 24 h / 30 d timers cannot fire, and the only
    timed move is high_intent's 30 min lapse (up to the final watermark)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE ev (user_id VARCHAR, event_id VARCHAR, ts BIGINT, event_type VARCHAR,"
                " scroll DOUBLE, dwell BIGINT)")
    con.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?, ?)",
                    [(e["user_id"], e["event_id"], e["ts"], e["event_type"], e.get("scroll_depth"),
                      e.get("dwell_ms")) for e in events])
    con.execute(f"""
    CREATE TABLE steps AS
    WITH o AS (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts, event_id) AS n,
               CASE WHEN ts - LAG(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id) < {gap_ms}
                    THEN 0 ELSE 1 END AS new_session,
               LEAD(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id) AS next_ts
        FROM ev),
    s AS (SELECT *, SUM(new_session) OVER (PARTITION BY user_id ORDER BY n) AS session_no FROM o)
    SELECT a.user_id, a.n, a.ts, a.next_ts, a.session_no AS sessions,
        -- product views in the 10 min window ending at this step, at its 10 s bucket resolution
        (SELECT COUNT(*) FROM s b WHERE b.user_id = a.user_id AND b.n <= a.n AND b.event_type = 'product_view'
            AND b.ts // 10000 > a.ts // 10000 - 60) AS views_10m,
        MAX(COALESCE(a.scroll, 0)) OVER (PARTITION BY a.user_id, a.session_no ORDER BY a.n) AS max_scroll,
        SUM(COALESCE(a.dwell, 0)) OVER (PARTITION BY a.user_id, a.session_no ORDER BY a.n) AS dwell,
        SUM(CASE WHEN a.event_type = 'purchase' THEN 1 ELSE 0 END) OVER (PARTITION BY a.user_id ORDER BY a.n)
            AS purchases,
        SUM(CASE WHEN a.event_type IN ('page_view', 'product_view') THEN 1 ELSE 0 END)
            OVER (PARTITION BY a.user_id ORDER BY a.n) AS views,
        ROUND((SELECT SUM(CASE b.event_type WHEN 'click' THEN 1 WHEN 'add_to_cart' THEN 3
                                            WHEN 'purchase' THEN 10 ELSE 0 END
                          * POW(0.5, (a.ts - b.ts) / {WEEK}.0))
               FROM s b WHERE b.user_id = a.user_id AND b.n <= a.n), 6) AS engagement
    FROM s a""")
    rules = {
        "high_intent": ("views_10m >= 3", "views_10m <= 1"),
        "engaged_reader": ("max_scroll > 0.8 AND dwell > 180000", "dwell > 60000 AND max_scroll < 0.5"),
        "engaged_buyer": ("purchases > 3", "purchases < 2"),
        "engaged": ("engagement >= 20", "engagement < 10"),
        "casual_browser": ("sessions < 2 AND views < 5 * sessions",
                           "sessions >= 3 OR views >= 8 * sessions"),
    }
    members = {}
    for segment, (entry, exit_) in rules.items():
        lapse = ""  # high_intent_lapsed: 30 min after a step with no later event before then
        if segment == "high_intent":
            lapse = f"""UNION ALL SELECT user_id, n + 0.5, 'exit' FROM steps
                        WHERE COALESCE(next_ts, {final_watermark} + 1) >= ts + {30 * MIN}
                          AND (next_ts IS NOT NULL OR ts + {30 * MIN} <= {final_watermark})"""
        rows = con.execute(f"""
            WITH decisive AS (
                SELECT user_id, n AS step, CASE WHEN {entry} THEN 'enter' ELSE 'exit' END AS action
                FROM steps WHERE ({entry}) OR ({exit_})
                {lapse})
            SELECT user_id FROM decisive GROUP BY user_id HAVING arg_max(action, step) = 'enter'""").fetchall()
        members[segment] = {user for user, in rows}
    rows = con.execute("""
        WITH parent AS (SELECT user_id, MIN(n) AS since FROM steps WHERE purchases > 3 GROUP BY user_id),
        decisive AS (
            SELECT s.user_id, s.n AS step,
                   CASE WHEN purchases >= 10 AND engagement >= 50 THEN 'enter' ELSE 'exit' END AS action
            FROM steps s JOIN parent p ON s.user_id = p.user_id AND s.n >= p.since
            WHERE (purchases >= 10 AND engagement >= 50) OR engagement < 30)
        SELECT user_id FROM decisive GROUP BY user_id HAVING arg_max(action, step) = 'enter'""").fetchall()
    members["loyal_customer"] = {user for user, in rows}  # a child of engaged_buyer (never left here)
    return members


@pytest.fixture(scope="module")
def replay(stack, datasets, tmp_path_factory):
    return replayed_run(tmp_path_factory.mktemp("segments-replay"), seed=13, limit=SLICE)


def test_segment_members_of_a_real_replay_equal_an_independent_duckdb_computation(replay):
    settings, events = replay
    # The job's event time at the end of the input: the latest record time (rounded up to its
    # second, as the parse tasks report it) minus the out-of-orderness.
    final_watermark = (max(e["ts"] for e in events) // S + 1) * S - 1 - settings.time.out_of_orderness
    oracle = oracle_members(events, settings.time.session_gap, final_watermark)
    reader = ProfileReader.from_settings(settings)
    sizes = reader.segment_sizes()
    assert {segment: len(users) for segment, users in oracle.items() if users} == sizes
    for segment, users in oracle.items():
        assert reader.members(segment) == users, segment
    assert sizes["high_intent"] > 100 and sizes["engaged_reader"] > 100 and sizes["engaged"] > 0
    assert "cart_abandoner" not in sizes  # its 24 h deadline lies beyond a 2 h slice


def test_a_bad_rules_file_stops_the_job_before_it_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID_RULES)
    result = subprocess.run([*PZ, "run", "--set", f"rules.path={bad}"],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: invalid rules: {bad}:{INVALID_LINE}: segment 'high_intent' entry: "
                                     "unknown feature or score 'product_view_10m' (did you mean 'product_views_10m'?)")


def test_rules_that_read_a_window_the_job_does_not_keep_stop_the_job(tmp_path):
    result = subprocess.run([*PZ, "config", "check", "--set", "time.windows.sizes=[10m, 7d]"],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert ("personalization/rules/default.yaml: feature 'purchases_30d': reads a 30d window, but the job keeps only 10m, 7d "
            "(add it to time.windows.sizes)") in result.stderr


def test_publishing_a_bad_rules_file_is_refused(stack, tmp_path):
    settings = isolated_settings(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID_RULES)
    topic = settings.kafka.topics.rules
    command = [*PZ, "rules", "publish", "--set", f"kafka.topics.rules={topic}"]
    result = subprocess.run(command + [str(bad)], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 2 and "(not published)" in result.stderr
    result = subprocess.run(command + [str(DEFAULT_RULES_FILE)], capture_output=True, text=True, timeout=60,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "published rules version 'default-2'" in result.stdout
    consumer_records = read_topic_raw(settings, topic)
    assert consumer_records == [DEFAULT_RULES]


def read_topic_raw(settings, topic: str) -> list[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        return [message.value.decode() for message in consumer]
    finally:
        consumer.close()


# --- the Redis writes, replayed; the reader CLI ------------------------------------------------

def test_replayed_writes_add_each_change_to_the_stream_once_and_sets_converge(stack, tmp_path):
    from personalization.serving.redis_store import ProfileWriter, connect, streamed_version_key

    settings = isolated_settings(tmp_path)
    prefix = settings.redis.key_prefix
    client = connect(settings.redis)
    writer = ProfileWriter(client, prefix, ttl_ms=60_000, stream_maxlen=1_000)
    reader = ProfileReader(client, prefix)

    def change(seq: int, segment: str, action: str) -> dict:
        return {"user_id": "u", "segment": segment, "action": action, "seq": seq, "event_time": T + seq,
                "rules_version": "v", "cause": {"rule": f"{segment}.{'entry' if action == 'enter' else 'exit'}",
                                                 "features": {"x": seq}}}

    first = [change(1, "a", "enter"), change(2, "b", "enter")]
    second = [change(3, "a", "exit")]
    assert writer.write({"user_id": "u", "version": 2}, first)
    assert writer.write({"user_id": "u", "version": 3}, second)
    # a restore replays both writes (same versions, same numbered changes, same order)
    assert not writer.write({"user_id": "u", "version": 2}, first)
    assert not writer.write({"user_id": "u", "version": 3}, second)
    assert [record for _, record in reader.changes()] == first + second
    assert (reader.members("a"), reader.members("b")) == (set(), {"u"})
    assert client.get(streamed_version_key(prefix, "u")) == b"3"
    assert 0 < client.pttl(streamed_version_key(prefix, "u")) <= 60_000


def test_the_reader_cli_shows_segments_members_sizes_and_follows_changes(live):
    settings = live["settings"]
    def cli(*args: str) -> str:
        result = subprocess.run([*PZ, *args, "--set", f"redis.key_prefix={settings.redis.key_prefix}"],
                                capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stderr
        return result.stdout

    import orjson

    assert orjson.loads(cli("segments", "hu")) == {
        "segments": {"high_intent": T + AFTER + MIN}, "primary_segment": "high_intent",
        "scores": {"engagement": 0.0}, "rules_version": "default-3"}
    assert cli("members", "loyal_customer").split() == ["lp"]
    assert "loyal_customer\t1" in cli("sizes").splitlines()
    followed = [orjson.loads(line) for line in cli("follow", "--from", "0", "--limit", "3").splitlines()]
    assert len(followed) == 3 and all(set(r) == {"id", "user_id", "segment", "action", "cause", "event_time",
                                                 "rules_version", "seq"} for r in followed)
