"""Read and validate a rules file; any problem is a ``RulesError`` naming file, line and reason.

The file is checked as a whole before anything runs: its shape by the pydantic models of
``schema`` (keys, scalar types, names, choices, durations), whose errors are reported at the
line of the place they name; then, here, what spans sections: every expression against the
declared features and scores and their types, parents, and trigger targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, get_args

from pydantic import BaseModel, ValidationError

from personalization.core.rules.expressions import Condition, ExpressionError, Type, compile_condition
from personalization.core.rules.features import Feature
from personalization.core.rules.model import Rules, Segment, Trigger
from personalization.core.rules.schema import EMPTY, EXPECTED, PROBLEM, RulesFile, SegmentSpec, TriggerSpec
from personalization.core.rules.scores import Score
from personalization.core.rules.source import Node, RulesError, describe, parse_yaml, suggest

_KINDS = {"features": "feature", "scores": "score", "segments": "segment", "triggers": "trigger"}
_PROBLEMS = {
    # pydantic's error type -> the problem; {key}: the key the error names, {name}: how the
    # message names the value there, {got}: the value as written, {msg}: the error's own message
    "missing": "missing '{key}'",
    "model_type": "expected a mapping, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "string_type": "{name} must be text, got {got}",
    "string_too_short": "{name} must be text, got {got}",
    "int_type": "{name} must be an integer, got {got}",
    "too_short": "{name} must not be empty",
    EMPTY: "{name} has no value: give one, or leave the key out",
    EXPECTED: "{name} {msg}, got {got}",
    PROBLEM: "{msg}",
}


def parse_rules(text: str, source: str) -> Rules:
    """Validated rules; raises only ``RulesError``, so a bad published text never fails the job.

    Size, depth and alias expansion are bounded in ``parse_yaml``; anything else that escapes
    (a ``RecursionError`` from a very long expression, say) becomes a ``RulesError`` too.
    """
    try:
        return _parse_rules(text, source)
    except RulesError:
        raise
    except RecursionError:
        raise RulesError(f"{source}: the rules text is nested too deeply (an expression too long or too deep)") from None
    except Exception as err:  # noqa: BLE001 - any failure of a rules text must reject it, not the job
        raise RulesError(f"{source}: the rules text could not be read: {type(err).__name__}: {err}") from None


@dataclass(frozen=True, slots=True)
class _File:
    """The parsed file, to report a problem at the line of a place in it."""

    root: Node
    source: str

    def fail(self, path: tuple[str | int, ...], problem: str, where: str | None = None) -> NoReturn:
        """``where`` defaults to the entry the path is in: ``feature 'x'``, a section, or nothing."""
        if where is None:
            where = _where(path)
        place = f"{where}: " if where else ""
        raise RulesError(f"{self.source}:{self.root.at(path).line}: {place}{problem}")

    def report(self, err: ValidationError) -> NoReturn:
        """The problem nearest the top of the file (an unknown key first on a line), in the rules'
        words. A key missing beside an unknown one is left out: a misspelt key is also a missing
        one, and the unknown key's suggestion is the useful message."""
        errors = err.errors(include_url=False)
        misspelt = {e["loc"][:-1] for e in errors if e["type"] == "extra_forbidden"}
        error = min((e for e in errors if not (e["type"] == "missing" and e["loc"][:-1] in misspelt)),
                    key=lambda e: (self.root.at(e["loc"]).line, e["type"] != "extra_forbidden"))
        loc = error["loc"]
        if error["type"] == "extra_forbidden":
            key = str(loc[-1])
            allowed = _keys_at(loc[:-1])
            hint = suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
            self.fail(loc, f"unknown key '{key}'{hint}")
        at = (error.get("ctx") or {}).get("at")
        path = loc + (at,) if at else loc
        template = _PROBLEMS.get(error["type"], "{name}: {msg}, got {got}")
        self.fail(path, template.format(key=loc[-1] if loc else "", name=_named(loc), got=describe(self.root.at(path)),
                                        msg=error["msg"]))


def _where(path: tuple[str | int, ...]) -> str:
    if not path or path[0] not in _KINDS:
        return ""
    return f"{_KINDS[str(path[0])]} '{path[1]}'" if len(path) > 1 else str(path[0])


def _named(loc: tuple[str | int, ...]) -> str:
    """How a message names the value at ``loc``: its key (that of its list, for a list item)."""
    if len(loc) == 4 and loc[0] == "scores" and loc[2] == "weights":
        return f"weight of '{loc[3]}'"
    keys = [part for part in loc if isinstance(part, str) and part != "[key]"]
    return keys[-1] if keys else ""


def _keys_at(path: tuple[str | int, ...]) -> list[str]:
    """The keys the model at ``path`` takes, following fields and the entries of sections."""
    shape: Any = RulesFile
    for part in path:
        if isinstance(shape, type) and issubclass(shape, BaseModel):
            shape = shape.model_fields[str(part)].annotation
        else:
            shape = get_args(shape)[-1]  # an entry of a dict
    return sorted(shape.model_fields)


def _parse_rules(text: str, source: str) -> Rules:
    root = parse_yaml(text, source)
    file = _File(root, source)
    try:
        spec = RulesFile.model_validate(root.data())
    except ValidationError as err:
        file.report(err)
    features = tuple(Feature(name, f.agg, f.over, f.event_type, f.field) for name, f in spec.features.items())
    for name in spec.scores:
        if name in spec.features:
            file.fail(("scores", name), "name already used by a feature")
    scores = tuple(Score(name, s.weights, s.half_life) for name, s in spec.scores.items())
    names = {f.name: f.type for f in features} | {s.name: Type.NUMBER for s in scores}
    segments = [_segment(file, name, s, names) for name, s in spec.segments.items()]
    triggers = tuple(_trigger(file, name, t, spec.segments) for name, t in spec.triggers.items())
    entered = {t.segment for t in triggers if t.action == "enter"}
    for segment in segments:
        if segment.entry is None and segment.name not in entered:
            file.fail(("segments", segment.name), "no 'entry' condition and no trigger enters it")
    return Rules(spec.version, features, scores, _parents_first(file, segments), triggers)


def _segment(file: _File, name: str, spec: SegmentSpec, names: dict[str, Type]) -> Segment:
    entry = _condition(file, name, "entry", spec.entry, names)
    exit_ = _condition(file, name, "exit", spec.exit, names)
    if exit_ is None and entry is not None:
        test = entry.test
        exit_ = Condition(f"{name}.exit", f"not ({entry.text})", lambda env: not test(env), entry.names)
    return Segment(name, spec.parent, entry, exit_, spec.priority)


def _condition(file: _File, segment: str, key: str, text: str | None, names: dict[str, Type]) -> Condition | None:
    if text is None:
        return None
    try:
        return compile_condition(f"{segment}.{key}", text, names)
    except ExpressionError as err:
        file.fail(("segments", segment, key), str(err), where=f"segment '{segment}' {key}")


def _trigger(file: _File, name: str, spec: TriggerSpec, segments: Mapping[str, SegmentSpec]) -> Trigger:
    action, segment = spec.then.action, spec.then.segment
    if segment not in segments:
        file.fail(("triggers", name, "then", action), f"unknown segment '{segment}'{suggest(segment, segments)}")
    if spec.inactive_for is not None:
        return Trigger(name, action, segment, inactive_ms=spec.inactive_for)
    return Trigger(name, action, segment, on=spec.on, unless=spec.unless, within_ms=spec.within)


def _parents_first(file: _File, segments: list[Segment]) -> tuple[Segment, ...]:
    """Order segments so that each parent is decided before its children (file order otherwise)."""
    by_name = {s.name: s for s in segments}
    ordered: dict[str, Segment] = {}

    def visit(segment: Segment, path: tuple[str, ...]) -> None:
        if segment.name in ordered:
            return
        if segment.name in path:
            cycle = " -> ".join(path[path.index(segment.name):] + (segment.name,))
            file.fail(("segments", segment.name), f"parent cycle {cycle}")
        if segment.parent is not None:
            if segment.parent not in by_name:
                file.fail(("segments", segment.name, "parent"),
                          f"unknown parent segment '{segment.parent}'{suggest(segment.parent, by_name)}")
            visit(by_name[segment.parent], path + (segment.name,))
        ordered[segment.name] = segment

    for segment in segments:
        visit(segment, ())
    return tuple(ordered.values())
