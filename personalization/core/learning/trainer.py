"""The trainer: the shared models and the propensity labels, as a deterministic state machine.

The Flink trainer operator (``operators.trainer``) is a thin adapter onto ``Trainer``. Its input
is the records of ``core.learning.feed`` from every user task; its only other input is the
watermark. Two operations change the state:

- ``receive(record)``: a record whose time is ahead of the trainer's watermark is held; one
  at or behind it (an event the user side gave the rules late) is processed at once;
- ``advance(watermark)``: every held record up to the watermark is processed, in
  the records' ``sort_key`` order (time, kind, user, id).

So the trainer's state is a function of the sequence of operations, and the order in which
records are processed is the order of a sorted stream, whatever the arrival order, the
parallelism of the user tasks, or how watermarks batch. That is what lets the operator keep the
models in memory and checkpoint them cheaply: a pickled snapshot now and then, plus the log of
operations since (see ``operators.trainer``), replayed on restore. The per-user label bookkeeping
is not in that pickle: a ``Snapshot`` carries only the users whose labels changed since the one
before, so its cost follows the traffic between snapshots, not the number of users with labels
(about 130,000 at once in the 1M-user state run).

Processing a record:

- event: the propensity model scores the event's session (``propensity.on_event``; predictions
  are numbered as questions), the event's category counts towards trending, and the user's
  predictions are updated: propensity (1.0 and ``known`` once the session has its purchase),
  interests (the user's own top-k, or trending categories for a user with little history);
- session: ``propensity.on_session`` (a negative label for a session closed without purchase),
  and a closed session assigns the user's behavioural cluster.

Each processed record gets the next number of ``processed``: the version of the user's
predictions in Redis (a compare-and-set refuses older versions, so a replay cannot move them
backwards).
"""

from __future__ import annotations

import heapq
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from personalization.core.learning import propensity
from personalization.core.learning.feed import EraseRecord, EventRecord, SessionRecord, decode
from personalization.core.learning.propensity import FEATURE_NAMES, LabelState, Learned
from personalization.core.learning.shared import SharedModels

END_OF_INPUT = 2**63 - 1  # Flink's final watermark of a bounded stream


class Span(NamedTuple):
    """The parts of a session summary the label bookkeeping reads."""

    session_id: str
    start: int
    end: int
    status: str = "open"
    converted: bool = False


class Snapshot(NamedTuple):
    """The trainer as checkpointed state: itself without its labels, pickled, and the labels of the
    users that changed since the previous snapshot (``None``: forgotten), kept per user by the
    operator."""

    trainer: bytes
    labels: dict[str, LabelState | None]


@dataclass(frozen=True, slots=True)
class TrainerRules:
    horizon_ms: int                  # session gap + allowed lateness: when a labelled span can be forgotten
    top_k: int = 5                   # trending categories shown to cold-start users
    export_every: int = 0            # ask for a snapshot file every this many learned examples (0 = never)


@dataclass(slots=True)
class Outputs:
    """What one operation asks the operator to do."""

    writes: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # user -> (version, fields)
    examples: list[dict[str, Any]] = field(default_factory=list)                 # learned, in learning order
    erased: list[str] = field(default_factory=list)  # users whose predictions must be deleted
    export_at: int | None = None     # write a snapshot file (created_at = this event time)
    processed: int = 0

    def write(self, user: str, version: int, fields: dict[str, Any]) -> None:
        """Several updates of one user in one operation collapse into one write of the newest values."""
        merged = {**self.writes[user][1], **fields} if user in self.writes else fields
        self.writes[user] = (version, merged)


class Trainer:
    def __init__(self, rules: TrainerRules, models: SharedModels | None = None, origin: str | None = None) -> None:
        self.rules = rules
        self.models = models or SharedModels()
        self.origin = origin                          # sha256 of the snapshot file the models started from
        self.labels: dict[str, LabelState] = {}
        self._changed: set[str] = set()               # users whose labels changed since the last snapshot
        self.held: list[tuple[tuple[Any, ...], str]] = []  # heap of (sort key, record json)
        self.watermark: int | None = None
        self.clock: int | None = None                 # time of the newest record processed
        self.processed = 0
        self.questions = 0
        self.last_export: dict[str, Any] | None = None  # the newest snapshot file asked for
        self.late = 0                                 # records that came behind the watermark

    # --- the two operations ------------------------------------------------------------------

    def receive(self, text: str) -> Outputs:
        """``text``: a record as ``feed.encode`` wrote it (held as that text: it is small)."""
        record = decode(text)
        out = Outputs()
        if isinstance(record, EraseRecord):
            self._erase(record.user, out)
        elif self.watermark is not None and record.time <= self.watermark:
            self.late += 1   # processed in arrival order: an event the user side gave the rules late
            self._process(record, out)
        else:
            heapq.heappush(self.held, (record.sort_key(), text))
        return out

    def advance(self, watermark: int) -> Outputs:
        out = Outputs()
        if self.watermark is None or watermark > self.watermark:
            self.watermark = watermark
        while self.held and self.held[0][0][0] <= self.watermark:
            _, text = heapq.heappop(self.held)
            record = decode(text)
            assert not isinstance(record, EraseRecord)  # never held
            self._process(record, out)
        if watermark >= END_OF_INPUT:
            self.sweep(watermark)   # the end of a bounded input: nothing can reach any span now
        return out

    def final_export(self) -> int | None:
        """At the end of input: ask for a snapshot file of the final models (its ``created_at``),
        unless the newest one asked for already holds them."""
        learned = self.models.propensity.learned
        if not learned or (self.last_export or {}).get("examples_learned") == learned:
            return None
        self.last_export = {"created_at": self.clock, "examples_learned": learned}
        return self.clock

    def next_time(self) -> int | None:
        """The time of the oldest held record: when the operator's next timer is due."""
        return self.held[0][0][0] if self.held else None

    # --- state ---------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        changed = {user: self.labels.get(user) for user in self._changed}
        self._changed = set()
        return Snapshot(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), changed)

    @staticmethod
    def restore(data: bytes, labels: Iterable[tuple[str, LabelState]], rules: TrainerRules) -> Trainer:
        """``labels``: every user's labels as the snapshots so far left them."""
        trainer = pickle.loads(data)
        if not isinstance(trainer, Trainer):
            raise TypeError(f"expected a Trainer snapshot, got {type(trainer).__name__}")
        trainer.labels.update(labels)
        trainer.rules = rules   # the running config's, not the one the snapshot was taken under
        return trainer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["labels"], state["_changed"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        labels = state.pop("labels", {})   # a snapshot taken before the labels moved out holds them
        self.__dict__.update(state)
        self.labels = labels
        self._changed = set(labels)        # the next snapshot moves them out

    def adopt(self, models: SharedModels, origin: str) -> None:
        """Start from (or roll back to) snapshot models; the label bookkeeping stays."""
        self.models = models
        self.origin = origin

    def sweep(self, watermark: int | None = None) -> None:
        """Forget labelled spans no event can reach any more, and users with nothing left."""
        until = max((t for t in (self.clock, watermark) if t is not None), default=None)
        if until is None:
            return
        for user in list(self.labels):
            state = self.labels[user]
            spans = len(state.labelled)
            propensity.forget(state, until, self.rules.horizon_ms)
            if state.empty():
                del self.labels[user]
                self._changed.add(user)
            elif len(state.labelled) != spans:
                self._changed.add(user)

    def model_bytes(self) -> int:
        """Size of the pickled shared models. Pickled once more after a round trip: pickle's
        output depends on which objects happen to be shared in memory, the round trip makes it
        depend on the content only (the same after a restore as in an uninterrupted run)."""
        return len(pickle.dumps(pickle.loads(self.models.snapshot()), protocol=pickle.HIGHEST_PROTOCOL))

    def view(self) -> dict[str, Any]:
        """The model keys' content: progressive metrics, cluster centroids, trending categories."""
        models = self.models
        return {
            "propensity": models.propensity.metrics(),
            "clusters": models.clusters.summary(),
            "trending": {"as_of": models.trending.anchor,
                         "categories": [{"category_id": c, "events": n}
                                        for c, n in models.trending.top(self.rules.top_k)]},
            "records_processed": self.processed,
            "users_with_labels": len(self.labels),
            "records_late": self.late,
            "last_snapshot": self.last_export,
        }

    # --- processing ----------------------------------------------------------------------------

    def _process(self, record: EventRecord | SessionRecord, out: Outputs) -> None:
        self.processed += 1
        out.processed += 1
        self.clock = record.time if self.clock is None else max(self.clock, record.time)
        if isinstance(record, EventRecord):
            self._event(record, out)
        else:
            self._session(record, out)

    def _event(self, record: EventRecord, out: Outputs) -> None:
        models, user, ts = self.models, record.user, record.time
        labels = self._labels_of(user)
        span = Span(record.session.session_id, record.session.start, record.session.end)
        x = dict(zip(FEATURE_NAMES, record.features))
        question = self.questions + 1
        score = propensity.on_event(models.propensity, labels, span, x, ts, record.purchase, question)
        pending = labels.pending.get(span.session_id)
        if pending is not None and pending.question == question:
            self.questions = question
        if score.learned is not None:
            self._learned(user, ts, score.learned, out)
        if record.category is not None:
            models.trending.add(record.category, ts)
        if record.interests:
            interests = {"source": "personal", "as_of": record.interests_as_of,
                         "categories": [{"category_id": c, "score": s} for c, s in record.interests]}
        else:
            interests = {"source": "trending", "as_of": models.trending.anchor,
                         "categories": [{"category_id": c, "score": float(n)}
                                        for c, n in models.trending.top(self.rules.top_k)]}
        out.write(user, self.processed, {
            "user_id": user,
            "propensity": score.probability,
            "propensity_known": score.known,
            "propensity_session": span.session_id,
            "propensity_at": ts,
            "interests": interests,
        })

    def _session(self, record: SessionRecord, out: Outputs) -> None:
        models, user, t = self.models, record.user, record.time
        labels = self._labels_of(user)
        session = record.session
        span = Span(session.session_id, session.start, session.end, status=record.status,
                    converted=record.converted)
        learned = propensity.on_session(models.propensity, labels, span)
        if learned is not None:
            self._learned(user, t, learned, out)
        if record.behaviour is not None:
            out.write(user, self.processed, {"user_id": user, "cluster": models.clusters.assign(record.behaviour),
                                             "cluster_at": t})
        propensity.forget(labels, t, self.rules.horizon_ms)
        if labels.empty():
            del self.labels[user]

    def _erase(self, user: str, out: Outputs) -> None:
        """Drop the user's held records and label bookkeeping, and ask for their predictions to be
        deleted (again: the trainer may have written them after the user task deleted them).
        What the shared models already learned from the user stays, as aggregates naming no one."""
        held = [entry for entry in self.held if entry[0][2] != user]
        if len(held) != len(self.held):
            heapq.heapify(held)
            self.held = held
        self.labels.pop(user, None)
        self._changed.add(user)
        out.erased.append(user)

    def _labels_of(self, user: str) -> LabelState:
        """The user's labels, for a change."""
        self._changed.add(user)
        return self.labels.setdefault(user, LabelState())

    def _learned(self, user: str, t: int, learned: Learned, out: Outputs) -> None:
        model = self.models.propensity
        out.examples.append({
            "seq": model.learned, "user_id": user, "session_id": learned.session_id, "event_time": t,
            "label": learned.label, "prediction": learned.prediction, "question": learned.question,
            "questions_asked": self.questions, "x": list(learned.x.values()),
        })
        every = self.rules.export_every
        if every and model.learned % every == 0:
            out.export_at = t
            self.last_export = {"created_at": t, "examples_learned": model.learned}
