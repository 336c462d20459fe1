"""Run a rules file against one user: scores, triggers and segment membership.

Everything is a pure function of explicit state, inputs and event time; the caller (the
Flink operator, the benchmark, a test) owns the ``SegmentState`` and arms the timers.

Call order per applied event: ``on_event`` (scores, triggers), then ``evaluate`` with the
feature inputs anchored at the user's latest event time; on an event-time timer,
``on_deadline`` with the watermark; after either, arm a timer at ``next_deadline``.

Decisions are ordered in event time: a decision about a segment at time t never overrides a
decision about it made at a later event time. So when a purchase is processed before the
watermark fires an older cart deadline (a replay reads everything before the first watermark),
the stale deadline does not put the user back in ``cart_abandoner``.

Out-of-order ``on``/``unless`` events are matched exactly while the disorder (allowed
lateness + out-of-orderness) is shorter than the trigger's ``within``: only the latest
``unless`` time is kept, which is enough then and keeps the state small.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personalization.core.evolvable import evolvable
from personalization.core.rules.expressions import Value
from personalization.core.rules.features import FeatureInputs, Requirements, requirements
from personalization.core.rules.loader import parse_rules
from personalization.core.rules.model import Segment, Trigger
from personalization.core.rules.scores import decay_score, score_at

ENTER = "enter"
EXIT = "exit"


@evolvable
@dataclass(slots=True)
class SegmentState:
    """One user's rule state: small, picklable, and the same for the same inputs."""

    user_id: str
    members: dict[str, int] = field(default_factory=dict)  # segment -> event time entered
    decided_at: dict[str, int] = field(default_factory=dict)  # segment -> latest decision's event time
    scores: dict[str, tuple[int | float, int]] = field(default_factory=dict)  # score -> (value, as of)
    armed: dict[str, list[int]] = field(default_factory=dict)  # trigger -> sorted pending deadlines
    last_unless: dict[str, int] = field(default_factory=dict)  # trigger -> latest `unless` event time
    last_event: int | None = None  # latest event time: the inactivity clock


@dataclass(frozen=True, slots=True)
class Cause:
    rule: str  # '<segment>.entry', '<segment>.exit', a trigger name, '<segment>.parent' or '<segment>.removed'
    features: Mapping[str, Value]  # the values the rule read


@dataclass(frozen=True, slots=True)
class SegmentChange:
    user_id: str
    segment: str
    action: str  # enter | exit
    cause: Cause
    event_time: int
    rules_version: str

    def as_record(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "segment": self.segment,
            "action": self.action,
            "cause": {"rule": self.cause.rule, "features": dict(self.cause.features)},
            "event_time": self.event_time,
            "rules_version": self.rules_version,
        }


class RuleSet:
    """A validated rules file, compiled; pickles as its text (closures do not pickle).

    ``RuleSet(text, source)`` validates text from anywhere (a rules topic); ``source`` names it
    in errors. Raises ``RulesError``.
    """

    def __init__(self, text: str, source: str = "<rules>") -> None:
        rules = parse_rules(text, source)
        self.text = text
        self.source = source
        self.version = rules.version
        self.features = rules.features
        self.scores = rules.scores
        self.segments = rules.segments
        self.triggers = {t.name: t for t in rules.triggers}
        self.requirements: Requirements = requirements(rules.features)
        self._segments = {s.name: s for s in rules.segments}
        self._children = {s.name: tuple(c.name for c in rules.segments if c.parent == s.name) for s in rules.segments}
        self._weights: dict[str, list[tuple[str, float, int | None]]] = {}
        for score in rules.scores:
            for event_type, weight in score.weights.items():
                self._weights.setdefault(event_type, []).append((score.name, weight, score.half_life_ms))
        self._inactivity = tuple((t.name, t.inactive_ms) for t in rules.triggers if t.inactive_ms is not None)
        self._inactivity_names = frozenset(name for name, _ in self._inactivity)
        self._on = _by_event_type(rules.triggers, "on")
        self._unless = _by_event_type(rules.triggers, "unless")

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        """Errors name the file as given, e.g. ``rules/default.yaml:42: ...``."""
        return cls(Path(path).read_text(), str(path))

    def __reduce__(self) -> tuple[type[RuleSet], tuple[str, str]]:
        return RuleSet, (self.text, self.source)

    def on_event(self, state: SegmentState, event_type: str, ts: int) -> list[SegmentChange]:
        """Fold one applied event into scores and triggers; returns the changes it settles."""
        # An event at or after an inactivity deadline proves the gap: settle it before the
        # event re-arms the clock, as the watermark would have in a sorted stream.
        changes = self._fire(state, ts, self._inactivity_names)
        for name, weight, half_life in self._weights.get(event_type, ()):
            value, last_ts = state.scores.get(name, (0.0, ts))
            state.scores[name] = decay_score(value, last_ts, ts, weight, half_life)
        if state.last_event is None or ts > state.last_event:
            state.last_event = ts
            for name, inactive_ms in self._inactivity:
                state.armed[name] = [ts + inactive_ms]
        for trigger in self._unless.get(event_type, ()):
            within = trigger.within_ms or 0  # the loader refuses 'unless' without 'within'
            state.last_unless[trigger.name] = max(ts, state.last_unless.get(trigger.name, ts))
            pending = [d for d in state.armed.get(trigger.name, ()) if not d - within <= ts < d]
            _store(state.armed, trigger.name, pending)
        for trigger in self._on.get(event_type, ()):
            if trigger.within_ms is None:
                changes += self._act(state, trigger, ts)
                continue
            cancel = state.last_unless.get(trigger.name)
            if cancel is not None and ts <= cancel < ts + trigger.within_ms:
                continue  # the `unless` event already arrived (out of order)
            pending = state.armed.setdefault(trigger.name, [])
            deadline = ts + trigger.within_ms
            at = bisect.bisect_left(pending, deadline)
            if at == len(pending) or pending[at] != deadline:
                pending.insert(at, deadline)
        return changes

    def evaluate(self, state: SegmentState, inputs: FeatureInputs, event_time: int) -> list[SegmentChange]:
        """Decide every segment from the features and scores at ``event_time`` (the inputs' anchor)."""
        changes = self._forget_removed(state, event_time)
        values: dict[str, Value] = {f.name: f.value(inputs) for f in self.features}
        values.update(self.read_scores(state, event_time))
        for segment in self.segments:
            name = segment.name
            member = name in state.members
            if segment.parent is not None and segment.parent not in state.members:
                if member:  # only after a rules update gave it a parent the user is not in
                    changes += self._exit(state, name, Cause(f"{name}.parent", {}), event_time)
                continue
            if state.decided_at.get(name, event_time) > event_time:
                continue
            rule = segment.exit if member else segment.entry
            if rule is not None and rule.test(values):
                cause = Cause(rule.name, {n: values[n] for n in rule.names})
                changes += self._exit(state, name, cause, event_time) if member else \
                    self._enter(state, segment, cause, event_time)
        return changes

    def on_deadline(self, state: SegmentState, watermark: int) -> list[SegmentChange]:
        """Fire every armed deadline at or before ``watermark``, oldest first."""
        for name in [n for n in state.armed if n not in self.triggers]:
            del state.armed[name]
        return self._fire(state, watermark, self.triggers.keys())

    def next_deadline(self, state: SegmentState) -> int | None:
        """The event time at which ``on_deadline`` has something to do next."""
        return min((d[0] for n, d in state.armed.items() if d and n in self.triggers), default=None)

    def read_scores(self, state: SegmentState, at: int) -> dict[str, float]:
        out = {}
        for score in self.scores:
            value, last_ts = state.scores.get(score.name, (0.0, at))
            out[score.name] = score_at(value, last_ts, at, score.half_life_ms)
        return out

    def primary(self, state: SegmentState) -> str | None:
        """The member segment with the highest priority; ties go to the first name."""
        held = [self._segments[name] for name in state.members if name in self._segments]
        return min(held, key=lambda s: (-s.priority, s.name)).name if held else None

    def _fire(self, state: SegmentState, until: int, names: Iterable[str]) -> list[SegmentChange]:
        due = sorted((d, name) for name in names for d in state.armed.get(name, ()) if d <= until)
        changes: list[SegmentChange] = []
        for deadline, name in due:
            _store(state.armed, name, [d for d in state.armed[name] if d != deadline])
            changes += self._act(state, self.triggers[name], deadline)
        return changes

    def _act(self, state: SegmentState, trigger: Trigger, at: int) -> list[SegmentChange]:
        name = trigger.segment
        if state.decided_at.get(name, at) > at:
            return []  # a later decision stands
        segment = self._segments[name]
        cause = Cause(trigger.name, {})
        if trigger.action == ENTER:
            if segment.parent is not None and segment.parent not in state.members:
                return []
            state.decided_at[name] = at
            return [] if name in state.members else self._enter(state, segment, cause, at)
        state.decided_at[name] = at
        return self._exit(state, name, cause, at) if name in state.members else []

    def _enter(self, state: SegmentState, segment: Segment, cause: Cause, at: int) -> list[SegmentChange]:
        state.members[segment.name] = at
        state.decided_at[segment.name] = at
        return [SegmentChange(state.user_id, segment.name, ENTER, cause, at, self.version)]

    def _exit(self, state: SegmentState, name: str, cause: Cause, at: int) -> list[SegmentChange]:
        """Leave ``name`` and, with the same cause, every child segment held under it."""
        del state.members[name]
        state.decided_at[name] = max(at, state.decided_at.get(name, at))
        changes = [SegmentChange(state.user_id, name, EXIT, cause, at, self.version)]
        for child in self._children.get(name, ()):
            if child in state.members:
                changes += self._exit(state, child, cause, at)
        return changes

    def leave_all(self, state: SegmentState, cause: Cause, at: int) -> list[SegmentChange]:
        """Leave every segment (the profile is handed over to another id, see ``core.identity``)."""
        changes: list[SegmentChange] = []
        for name in sorted(state.members):
            if name in state.members:  # not left already as a child of an earlier one
                changes += self._exit(state, name, cause, at)
        return changes

    def _forget_removed(self, state: SegmentState, at: int) -> list[SegmentChange]:
        """After a rules update: leave segments that no longer exist, drop dead score and trigger state."""
        changes = []
        for name in sorted(n for n in state.members if n not in self._segments):
            del state.members[name]
            changes.append(SegmentChange(state.user_id, name, EXIT, Cause(f"{name}.removed", {}), at, self.version))
        for table, known in ((state.decided_at, self._segments), (state.scores, {s.name for s in self.scores}),
                             (state.armed, self.triggers), (state.last_unless, self.triggers)):
            for name in [n for n in table if n not in known]:
                del table[name]
        return changes


def _by_event_type(triggers: tuple[Trigger, ...], key: str) -> dict[str, tuple[Trigger, ...]]:
    out: dict[str, list[Trigger]] = {}
    for trigger in triggers:
        for event_type in getattr(trigger, key):
            out.setdefault(event_type, []).append(trigger)
    return {event_type: tuple(group) for event_type, group in out.items()}


def _store(table: dict[str, list[int]], name: str, deadlines: list[int]) -> None:
    """Keep the state small: no empty entries."""
    if deadlines:
        table[name] = deadlines
    else:
        table.pop(name, None)
