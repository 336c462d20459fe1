"""The trainer fed by the user logic, in plain Python, as the job runs them.

``Job`` plays the Flink job: user tasks (UserLogic with the learning feed; users hashed over
``tasks``) with one timer per user, and the trainer (its state + the operation log the operator
keeps, snapshotted every ``snapshot_every`` operations, with the labels kept per user as the
operator's map state keeps them: only the changed ones written at a snapshot). Checked here:
what the trainer learns and writes does not depend on arrival order, parallelism or watermark
batching; a restore from snapshot + log is exact; the examples match River's progressive
validation; hand-made streams give exact interests, cold-start fallbacks and clusters.
"""

from __future__ import annotations

import copy
import pickle
import random
import zlib

import orjson
import pytest
from river import metrics

from personalization.config.settings import DEFAULT_RULES
from personalization.core.events import Event
from personalization.core.learning.feed import (FORMAT, EraseRecord, EventRecord, LearningFeed, SessionRecord, SessionRef,
                                                decode, encode)
from personalization.core.learning.interests import InterestRules
from personalization.core.learning.evaluation import river_predictions
from personalization.core.learning.trainer import Trainer, TrainerRules
from personalization.core.rules import RuleSet
from personalization.core.sessions import SessionRules
from personalization.core.user import END_OF_INPUT, Outcome, UserLogic

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T0 = 1_700_000_000_000
SESSION_RULES = SessionRules(gap_ms=30 * MIN, max_length_ms=4 * HOUR, allowed_lateness_ms=HOUR)
INTERESTS = InterestRules(half_life_ms=HOUR, max_categories=5, top_k=2, min_events=3)
LOGIC = UserLogic(SESSION_RULES, (10 * MIN, HOUR, DAY, 7 * DAY, 30 * DAY), 60, dedup_horizon_ms=DAY, top_categories=3,
                  learning=LearningFeed(SESSION_RULES, INTERESTS)).with_rules(RuleSet.load(DEFAULT_RULES))
TRAINER_RULES = TrainerRules(horizon_ms=SESSION_RULES.gap_ms + SESSION_RULES.allowed_lateness_ms, top_k=2)


class Job:
    def __init__(self, tasks: int = 1, snapshot_every: int = 0) -> None:
        self.tasks = tasks
        self.users: dict[str, object] = {}
        self.timers: dict[str, int] = {}
        self.trainer = Trainer(TRAINER_RULES)
        self.labels: dict[str, object] = {}   # the operator's map state
        self.snapshot = self._take_snapshot()
        self.log: list[tuple[str, object]] = []
        self.snapshot_every = snapshot_every
        self.writes: dict[str, tuple[int, dict]] = {}
        self.examples: list[dict] = []
        self.inbox: list[list[str]] = [[] for _ in range(tasks)]   # records in flight per task

    def event(self, event: Event, watermark: int) -> None:
        state = self.users.setdefault(event.user_id, LOGIC.new_state(event.user_id))
        result = LOGIC.on_event(state, event, watermark)
        if result.outcome is Outcome.PROCESSED:
            self._take(event.user_id, result)

    def advance(self, watermark: int) -> None:
        for user in sorted(self.timers, key=lambda u: (self.timers[u], u)):
            if self.timers.get(user) is not None and self.timers[user] <= watermark:
                del self.timers[user]
                self._take(user, LOGIC.on_timer(self.users[user], watermark))
        self._deliver()
        self._op("w", watermark)

    def finish(self) -> None:
        for user in self.users:
            self.timers[user] = END_OF_INPUT
        self.advance(END_OF_INPUT)

    def _take(self, user: str, result) -> None:
        self.inbox[zlib.crc32(user.encode()) % self.tasks].extend(map(encode, result.learning))
        if result.next_timer is not None:
            self.timers[user] = result.next_timer

    def _deliver(self) -> None:
        """Channels from the user tasks interleave arbitrarily; within one, order is kept."""
        rng = random.Random(len(self.log))
        while any(self.inbox):
            task = rng.choice([i for i, box in enumerate(self.inbox) if box])
            self._op("r", self.inbox[task].pop(0))

    def _op(self, kind: str, value) -> None:
        self.log.append((kind, value))
        out = self.trainer.receive(value) if kind == "r" else self.trainer.advance(value)
        for user, (version, fields) in out.writes.items():
            old = self.writes.get(user, (0, {}))
            assert version > old[0]
            self.writes[user] = (version, {**old[1], **fields})
        self.examples += out.examples
        if self.snapshot_every and len(self.log) >= self.snapshot_every:
            self.trainer.sweep()
            self.snapshot, self.log = self._take_snapshot(), []

    def _take_snapshot(self) -> bytes:
        snapshot = self.trainer.snapshot()
        for user, labels in snapshot.labels.items():
            if labels is None:
                self.labels.pop(user, None)   # it may have come and gone between two snapshots
            else:
                self.labels[user] = copy.deepcopy(labels)   # state holds a copy (pickled), not the live object
        return snapshot.trainer

    def restored_trainer(self) -> Trainer:
        """What the operator rebuilds after a restore: the snapshot and labels, then the log replayed."""
        trainer = Trainer.restore(self.snapshot, copy.deepcopy(self.labels).items(), TRAINER_RULES)
        for kind, value in self.log:
            trainer.receive(value) if kind == "r" else trainer.advance(value)
        return trainer


def generated(seed: int, users: int = 30, sessions: int = 8) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for u in range(users):
        ts = T0 + rng.randrange(HOUR)
        for s in range(sessions):
            buyer = rng.random() < 0.3
            n = rng.randint(1, 7)
            for k in range(n):
                etype = rng.choice(["page_view", "product_view", "product_view", "click", "scroll", "add_to_cart"])
                if buyer and k == n - 1:
                    etype = "purchase"
                events.append(Event(f"u{u}-{s}-{k}", etype, ts, f"u{u}", item_id=f"i{rng.randrange(30)}",
                                    category_id=f"c{rng.randrange(6)}", dwell_ms=rng.randrange(60_000),
                                    scroll_depth=round(rng.random(), 2) if etype == "scroll" else None))
                ts += rng.randrange(5_000, 5 * MIN)
            ts += rng.randrange(31 * MIN, 6 * HOUR)
    return sorted(events, key=lambda e: (e.ts, e.event_id))


def run(events: list[Event], tasks: int = 1, step: int = 7, disorder_ms: int = 0, seed: int = 0,
        snapshot_every: int = 0) -> Job:
    """Arrival order: event time + up to ``disorder_ms`` of jitter; the watermark trails the newest
    event by ``disorder_ms`` and advances every ``step`` events."""
    rng = random.Random(seed)
    arrival = sorted(events, key=lambda e: e.ts + rng.randrange(disorder_ms + 1))
    job, newest = Job(tasks, snapshot_every), 0
    for i, event in enumerate(arrival):
        newest = max(newest, event.ts)
        job.event(event, newest - disorder_ms - 1)
        if i % step == 0:
            job.advance(newest - disorder_ms - 1)
    job.finish()
    return job


@pytest.fixture(scope="module")
def reference() -> Job:
    return run(generated(1))


def test_every_labelled_session_is_learned_once(reference: Job) -> None:
    model = reference.trainer.models.propensity
    assert model.learned == model.labels == len(reference.examples) > 100
    assert 0 < model.positives < model.learned
    assert [e["seq"] for e in reference.examples] == list(range(1, model.learned + 1))
    assert reference.trainer.labels == {} and reference.trainer.held == []


@pytest.mark.parametrize("tasks,step,disorder_ms,seed", [(1, 1, 0, 0), (2, 13, 20_000, 1), (3, 50, 60_000, 2)])
def test_same_learning_whatever_the_arrival_order_parallelism_and_watermark_steps(reference, tasks, step,
                                                                                  disorder_ms, seed) -> None:
    job = run(generated(1), tasks=tasks, step=step, disorder_ms=disorder_ms, seed=seed)
    assert job.examples == reference.examples
    assert job.writes == reference.writes
    assert job.trainer.view() == reference.trainer.view()


def test_restore_from_snapshot_and_log_is_exact(reference: Job) -> None:
    events = generated(1)
    half = len(events) // 2
    job, newest = Job(tasks=2, snapshot_every=97), 0
    for i, event in enumerate(events[:half]):
        newest = event.ts
        job.event(event, newest - 1)
        if i % 5 == 0:
            job.advance(newest - 1)
    assert job.log and job.snapshot
    trainer = job.restored_trainer()
    assert (trainer.view(), trainer.labels, trainer.held, trainer.processed, trainer.questions) == (
        job.trainer.view(), job.trainer.labels, job.trainer.held, job.trainer.processed, job.trainer.questions)
    job.trainer = trainer          # continue on the restored trainer
    for i, event in enumerate(events[half:]):
        newest = event.ts
        job.event(event, newest - 1)
        if i % 5 == 0:
            job.advance(newest - 1)
    job.finish()
    assert job.examples == reference.examples
    assert job.trainer.view() == reference.trainer.view()


def _half_run() -> tuple[Job, list[Event]]:
    events = generated(1)
    job = Job()
    for event in events[:200]:
        job.event(event, event.ts - 1)
        job.advance(event.ts - 1)
    return job, events[200:]


def test_a_snapshot_carries_only_the_labels_changed_since_the_one_before() -> None:
    job, rest = _half_run()
    users_with_labels = len(job.trainer.labels)
    assert len(job.trainer.snapshot().labels) == users_with_labels > 5
    assert job.trainer.snapshot().labels == {}
    job.event(rest[0], rest[0].ts - 1)
    job.advance(rest[0].ts - 1)
    changed = job.trainer.snapshot().labels
    assert rest[0].user_id in changed and len(changed) < users_with_labels
    assert changed == {user: job.trainer.labels.get(user) for user in changed}


def test_a_snapshot_that_still_holds_the_labels_restores_and_hands_them_over(monkeypatch) -> None:
    """Savepoints of the release before the labels moved to their own state pickled them inside."""
    job, _ = _half_run()
    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "__getstate__", lambda self: {k: v for k, v in vars(self).items() if k != "_changed"})
        old = pickle.dumps(job.trainer)
    trainer = Trainer.restore(old, (), TRAINER_RULES)
    assert trainer.labels == job.trainer.labels != {}
    assert trainer.snapshot().labels == job.trainer.labels


def test_the_final_models_are_exported_once_at_the_end() -> None:
    trainer = run(generated(2, users=6, sessions=4)).trainer
    assert trainer.models.propensity.learned > 0
    assert trainer.final_export() == trainer.clock
    assert trainer.last_export == {"created_at": trainer.clock, "examples_learned": trainer.models.propensity.learned}
    assert trainer.final_export() is None   # already holds these models


def test_predictions_equal_rivers_progressive_val_score(reference: Job) -> None:
    ours = [e["prediction"] for e in reference.examples]
    theirs = river_predictions(reference.examples, metrics.ROCAUC(n_thresholds=100) + metrics.LogLoss())
    assert len(ours) == len(theirs) == len(reference.examples)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-9


# --- hand-made streams: interests, cold start, clusters -------------------------------------

def ev(user: str, eid: str, minute: float, etype: str = "product_view", category: str | None = None, **kw) -> Event:
    return Event(eid, etype, T0 + int(minute * MIN), user, category_id=category, **kw)


def test_interests_are_personal_after_min_events_and_trending_before() -> None:
    job = Job()
    stream = [ev("a", "a1", 0, category="shoes"), ev("a", "a2", 0, category="shoes"),
              ev("b", "b1", 2, category="hats"),
              ev("b", "b2", 30, category="shoes"),
              ev("a", "a3", 60, "add_to_cart", category="bags")]     # 3rd event of a, an hour later
    for e in stream:
        job.event(e, e.ts - 1)
        job.advance(e.ts)
    a, b = job.writes["a"][1]["interests"], job.writes["b"][1]["interests"]
    # a: bags 3 (add to cart, now); shoes 1 + 1 views one hour earlier = 2 * 1/2 = 1
    assert a == {"source": "personal", "as_of": T0 + 60 * MIN,
                 "categories": [{"category_id": "bags", "score": 3.0}, {"category_id": "shoes", "score": 1.0}]}
    # b has two events: trending over the last hour of event time at b2 (shoes 3 views, hats 1)
    assert b == {"source": "trending", "as_of": T0 + 30 * MIN,
                 "categories": [{"category_id": "shoes", "score": 3.0}, {"category_id": "hats", "score": 1.0}]}


def test_clusters_separate_buyers_from_browsers_and_summarize_in_readable_units() -> None:
    job = Job()
    stream = []
    for u in range(6):
        buyer = u % 2 == 0
        for s in range(3):
            start = 3 * s * HOUR / MIN + u   # sessions three hours apart, users a minute apart
            if buyer:
                stream += [ev(f"u{u}", f"u{u}-{s}-1", start, "add_to_cart"), ev(f"u{u}", f"u{u}-{s}-2", start + 1, "purchase")]
            else:
                stream += [ev(f"u{u}", f"u{u}-{s}-{k}", start + k, "page_view", dwell_ms=60_000) for k in range(6)]
    for e in sorted(stream, key=lambda e: e.ts):
        job.event(e, e.ts - 1)
        job.advance(e.ts - 1)
    job.finish()
    clusters = {u: job.writes[u][1]["cluster"] for u in job.writes}
    buyers = {clusters[f"u{u}"] for u in (0, 2, 4)}
    browsers = {clusters[f"u{u}"] for u in (1, 3, 5)}
    assert len(buyers) == 1 and len(browsers) == 1 and buyers != browsers
    summary = {c["cluster"]: c for c in job.trainer.view()["clusters"]}
    buyer, browser = summary[buyers.pop()], summary[browsers.pop()]
    assert buyer["centroid"]["purchase_rate"] > browser["centroid"]["purchase_rate"]
    assert browser["centroid"]["share_page_view"] > buyer["centroid"]["share_page_view"]
    assert sum(c["assignments"] for c in summary.values()) == 18   # one per closed session


def _first_format(text: str) -> str:
    """A record as the first format wrote it (one-letter keys, orjson), as savepoints of earlier
    releases hold it in the trainer's held records and operation log."""
    r = decode(text)
    if isinstance(r, EraseRecord):
        return orjson.dumps({"k": "x", "u": r.user}).decode()
    span = [r.session.session_id, r.session.start, r.session.end]
    if isinstance(r, EventRecord):
        return orjson.dumps({"k": "e", "t": r.time, "u": r.user, "id": r.event_id, "s": span, "x": r.features,
                             "p": r.purchase, "c": r.category, "n": r.events_seen,
                             "i": [list(pair) for pair in r.interests], "ia": r.interests_as_of}).decode()
    old = {"k": "s", "t": r.time, "u": r.user, "id": r.session.session_id, "s": span, "st": r.status,
           "cv": r.converted, "r": r.revision}
    return orjson.dumps(old if r.behaviour is None else {**old, "f": r.behaviour}).decode()


def test_learning_records_are_named_fields_with_their_kind_and_format():
    job = run(generated(3, users=5))
    texts = [value for kind, value in job.log if kind == "r"]
    kinds = {orjson.loads(text)["kind"] for text in texts}
    assert kinds == {"event", "session"}
    for text in texts:
        record = orjson.loads(text)
        assert all(len(key) > 1 for key in record), text        # no one-letter keys
        assert record["format"] == FORMAT
        assert encode(decode(text)) == text                      # the typed record round-trips exactly
    assert orjson.loads(encode(EraseRecord("gone"))) == {"kind": "erase", "user": "gone", "format": FORMAT}


def test_a_record_of_an_unknown_format_is_refused_by_name():
    """A savepoint of a later release may hold records this release cannot read: say so, do not guess."""
    later = orjson.loads(encode(EraseRecord("gone"))) | {"format": FORMAT + 1}
    with pytest.raises(ValueError, match=f"format {FORMAT + 1}: this release reads formats 1 and {FORMAT}"):
        decode(orjson.dumps(later).decode())


def test_records_of_the_first_format_train_the_same():
    """A savepoint of an earlier release holds records of the first format; a trainer fed them
    learns and writes exactly what one fed the same records in the current format does."""
    events = generated(5)
    job = run(events, disorder_ms=10 * MIN, seed=2)
    assert job.examples
    old = Trainer(TRAINER_RULES)
    writes: dict[str, tuple[int, dict]] = {}
    examples = []
    for kind, value in job.log:
        out = old.receive(_first_format(value)) if kind == "r" else old.advance(value)
        for user, (version, fields) in out.writes.items():
            writes[user] = (version, {**writes.get(user, (0, {}))[1], **fields})
        examples += out.examples
    assert examples == job.examples
    assert writes == job.writes


def test_records_carry_any_id_exactly():
    """Ids are the users' own strings: braces, colons, stars, quotes, backslashes, line
    separators and non-BMP text must reach the trainer unchanged and sort as strings."""
    hostile = ['{a}:*', '"\\\n', '\u2028{}*', '\U0001f600:{x}']
    for user in hostile:
        record = EventRecord(1, user, f"{user}-e", SessionRef(f"{user}:1", 1, 2), [0.5] * 20, False, user, 1,
                             [(user, 1.0)], 1)
        assert decode(encode(record)) == record
        session = SessionRecord(3, user, SessionRef(f"{user}:1", 1, 2), "closed", False, 0, {"events": 1.0})
        assert decode(encode(session)) == session
        assert decode(encode(EraseRecord(user))) == EraseRecord(user)
