"""Read and validate a rules file; any problem is a ``RulesError`` naming file, line and reason.

The file is checked as a whole before anything runs: structure, names, durations, event
types, and every expression against the declared features and scores and their types.
"""

from __future__ import annotations

import re

from personalization.core.durations import parse_duration_ms
from personalization.core.events import BEHAVIOUR_TYPES
from personalization.core.rules.expressions import KEYWORDS, Condition, ExpressionError, Type, compile_condition
from personalization.core.rules.features import (
    AGGREGATIONS, LIFETIME, NUMERIC_FIELDS, SESSION, TEXT_FIELDS, Feature,
)
from personalization.core.rules.model import Rules, Segment, Trigger
from personalization.core.rules.scores import Score
from personalization.core.rules.source import Node, Reader, RulesError, describe, parse_yaml, suggest

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS = tuple(sorted(NUMERIC_FIELDS + TEXT_FIELDS))


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


def _parse_rules(text: str, source: str) -> Rules:
    reader = Reader(source)
    root = parse_yaml(text, source)
    top = reader.fields(root, "", ("version", "features", "scores", "segments", "triggers"), ("version",))
    version = reader.text(top["version"], "", "version")
    features = tuple(_feature(reader, name, node)
                     for name, node in reader.section(top.get("features"), "features").items())
    scores = tuple(_score(reader, name, node, {f.name for f in features})
                   for name, node in reader.section(top.get("scores"), "scores").items())
    names = {f.name: f.type for f in features} | {s.name: Type.NUMBER for s in scores}
    segment_nodes = reader.section(top.get("segments"), "segments")
    segments = [_segment(reader, name, node, names) for name, node in segment_nodes.items()]
    triggers = tuple(_trigger(reader, name, node, segment_nodes)
                     for name, node in reader.section(top.get("triggers"), "triggers").items())
    entered = {t.segment for t in triggers if t.action == "enter"}
    for segment in segments:
        if segment.entry is None and segment.name not in entered:
            reader.fail(segment_nodes[segment.name], f"segment '{segment.name}'",
                        "no 'entry' condition and no trigger enters it")
    return Rules(version, features, scores, _parents_first(reader, segments, segment_nodes), triggers)


def _name(reader: Reader, node: Node, kind: str, name: str) -> str:
    if not _NAME.fullmatch(name) or name in KEYWORDS:
        reader.fail(node, f"{kind} '{name}'",
                    "a name must be letters, digits and _, not start with a digit, and not be a keyword")
    return name


def _duration(reader: Reader, node: Node, where: str, key: str, also: str = "") -> int:
    try:
        ms = parse_duration_ms(node.text or "")
    except ValueError:
        ms = 0
    if ms <= 0:
        reader.fail(node, where, f"{key} must be {also}a duration like 10m, 24h or 7d, got {describe(node)}")
    return ms


def _feature(reader: Reader, name: str, node: Node) -> Feature:
    where = f"feature '{_name(reader, node, 'feature', name)}'"
    spec = reader.fields(node, where, ("agg", "event_type", "field", "over"), ("agg", "over"))
    agg = reader.choice(spec["agg"], where, "agg", AGGREGATIONS)
    over_node = spec["over"]
    over: str | int
    if over_node.text in (SESSION, LIFETIME):
        over = over_node.text
    else:
        over = _duration(reader, over_node, where, "over", also="session, lifetime or ")
    takes_field = agg not in ("count", "sessions")
    for key, applies in (("event_type", agg == "count"), ("field", takes_field)):
        if key in spec and not applies:
            reader.fail(spec[key], where, f"'{key}' does not apply to agg '{agg}'")
    if takes_field and "field" not in spec:
        reader.fail(node, where, f"agg '{agg}' needs 'field'")
    if agg == "sessions" and over == SESSION:
        reader.fail(over_node, where, "agg 'sessions' needs over: lifetime or a window")
    event_types = reader.choices(spec["event_type"], where, "event type", BEHAVIOUR_TYPES) if "event_type" in spec else ()
    field = reader.choice(spec["field"], where, "field", _FIELDS) if "field" in spec else None
    if agg in ("sum", "max") and field not in NUMERIC_FIELDS:
        reader.fail(spec["field"], where, f"agg '{agg}' needs a numeric field ({', '.join(NUMERIC_FIELDS)}), "
                                          f"got '{field}'")
    return Feature(name, agg, over, event_types, field)


def _score(reader: Reader, name: str, node: Node, features: set[str]) -> Score:
    where = f"score '{_name(reader, node, 'score', name)}'"
    if name in features:
        reader.fail(node, where, "name already used by a feature")
    spec = reader.fields(node, where, ("weights", "half_life"), ("weights",))
    weights = reader.section(spec["weights"], where)
    if not weights:
        reader.fail(spec["weights"], where, "weights must not be empty")
    for event_type, weight in weights.items():
        reader.choice(Node(event_type, weight.line, event_type), where, "event type", BEHAVIOUR_TYPES)
    half_life = _duration(reader, spec["half_life"], where, "half_life") if "half_life" in spec else None
    return Score(name, {t: reader.number(w, where, f"weight of '{t}'") for t, w in weights.items()}, half_life)


def _segment(reader: Reader, name: str, node: Node, names: dict[str, Type]) -> Segment:
    where = f"segment '{_name(reader, node, 'segment', name)}'"
    spec = reader.fields(node, where, ("parent", "entry", "exit", "priority"))
    parent = reader.text(spec["parent"], where, "parent") if "parent" in spec else None
    entry = _condition(reader, spec["entry"], name, "entry", names) if "entry" in spec else None
    exit_ = _condition(reader, spec["exit"], name, "exit", names) if "exit" in spec else None
    if exit_ is None and entry is not None:
        test = entry.test
        exit_ = Condition(f"{name}.exit", f"not ({entry.text})", lambda env: not test(env), entry.names)
    priority = reader.integer(spec["priority"], where, "priority") if "priority" in spec else 0
    return Segment(name, parent, entry, exit_, priority)


def _condition(reader: Reader, node: Node, segment: str, key: str, names: dict[str, Type]) -> Condition:
    where = f"segment '{segment}'"
    text = reader.text(node, where, key)
    try:
        return compile_condition(f"{segment}.{key}", text, names)
    except ExpressionError as err:
        reader.fail(node, f"{where} {key}", str(err))


def _trigger(reader: Reader, name: str, node: Node, segments: dict[str, Node]) -> Trigger:
    where = f"trigger '{_name(reader, node, 'trigger', name)}'"
    spec = reader.fields(node, where, ("on", "unless", "within", "inactive_for", "then"), ("then",))
    then = reader.fields(spec["then"], where, ("enter", "exit"))
    if len(then) != 1:
        reader.fail(spec["then"], where, "then must be {enter: <segment>} or {exit: <segment>}")
    (action, target), = then.items()
    segment = reader.text(target, where, action)
    if segment not in segments:
        reader.fail(target, where, f"unknown segment '{segment}'{suggest(segment, segments)}")
    if "inactive_for" in spec:
        for key in ("on", "unless", "within"):
            if key in spec:
                reader.fail(spec[key], where, f"'{key}' cannot be combined with 'inactive_for'")
        inactive_ms = _duration(reader, spec["inactive_for"], where, "inactive_for")
        return Trigger(name, action, segment, inactive_ms=inactive_ms)
    if "on" not in spec:
        reader.fail(node, where, "needs 'on' (event types) or 'inactive_for'")
    if "unless" in spec and "within" not in spec:
        reader.fail(spec["unless"], where, "'unless' needs 'within'")
    return Trigger(
        name, action, segment,
        on=reader.choices(spec["on"], where, "event type", BEHAVIOUR_TYPES),
        unless=reader.choices(spec["unless"], where, "event type", BEHAVIOUR_TYPES) if "unless" in spec else (),
        within_ms=_duration(reader, spec["within"], where, "within") if "within" in spec else None,
    )


def _parents_first(reader: Reader, segments: list[Segment], nodes: dict[str, Node]) -> tuple[Segment, ...]:
    """Order segments so that each parent is decided before its children (file order otherwise)."""
    by_name = {s.name: s for s in segments}
    ordered: dict[str, Segment] = {}

    def visit(segment: Segment, path: tuple[str, ...]) -> None:
        if segment.name in ordered:
            return
        if segment.name in path:
            cycle = " -> ".join(path[path.index(segment.name):] + (segment.name,))
            reader.fail(nodes[segment.name], f"segment '{segment.name}'", f"parent cycle {cycle}")
        if segment.parent is not None:
            if segment.parent not in by_name:
                reader.fail(nodes[segment.name].value["parent"], f"segment '{segment.name}'",
                            f"unknown parent segment '{segment.parent}'{suggest(segment.parent, by_name)}")
            visit(by_name[segment.parent], path + (segment.name,))
        ordered[segment.name] = segment

    for segment in segments:
        visit(segment, ())
    return tuple(ordered.values())
