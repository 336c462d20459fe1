"""Rules-file text -> a tree of values that remember their line, and the one error type.

PyYAML's node graph keeps marks, its constructed values do not; so the file is composed into
nodes and converted here, keeping the line of every key for error messages. Keys are taken
as written: YAML 1.1 would read a bare ``on:`` key as the boolean true. The schema validates
the tree's plain data (``Node.data``); the place an error names is found again with ``Node.at``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor


MAX_TEXT_CHARS = 256 * 1024
"""A rules text longer than this is rejected before parsing (the default rules are ~10 KB)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists; the rules format needs fewer than 10 levels."""
MAX_NODES = 20_000
"""Most values after YAML aliases are expanded: stops an alias bomb ("billion laughs")."""


class RulesError(ValueError):
    """A problem in a rules file, phrased for the operator: ``file:line: where: what``."""


class Written(str):
    """A scalar YAML reads as something other than text (``1.10``, ``true``, ``2024-01-01``):
    the text exactly as written, so a text key keeps it (version ``1.10``, the condition ``true``),
    and in ``value`` what YAML made of it, for the keys that take numbers."""

    value: Any

    def __new__(cls, text: str, value: Any) -> Written:
        written = super().__new__(cls, text)
        written.value = value
        return written


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value: ``dict[str, Node]``, ``list[Node]``, ``str``, ``Written`` or ``None``, with its
    1-based line. A value under a key carries the key's line."""

    value: Any
    line: int

    def at(self, path: Iterable[str | int]) -> Node:
        """The node at ``path`` (mapping keys and list indexes), or the deepest one on the way
        there: the line an error about that place (perhaps a missing key) is reported at."""
        node = self
        for part in path:
            inner = node.value
            children = inner if isinstance(inner, dict) else dict(enumerate(inner)) if isinstance(inner, list) else {}
            if part not in children:
                break
            node = children[part]
        return node

    def data(self) -> Any:
        """The plain value (dicts, lists and scalars), without lines: what the schema validates."""
        if isinstance(self.value, dict):
            return {key: child.data() for key, child in self.value.items()}
        if isinstance(self.value, list):
            return [child.data() for child in self.value]
        return self.value


def parse_yaml(text: str, source: str) -> Node:
    if len(text) > MAX_TEXT_CHARS:
        raise RulesError(f"{source}: the rules text has {len(text):,} characters, more than the {MAX_TEXT_CHARS:,} allowed")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = ", ".join(part for part in (err.context, err.problem) if part)
        raise RulesError(f"{source}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise RulesError(f"{source}: invalid YAML: {err}") from None
    if root is None:
        raise RulesError(f"{source}:1: the rules file is empty")
    return _convert(root, root.start_mark.line + 1, source, SafeConstructor(), 0, [0])


def _convert(node: yaml.Node, line: int, source: str, constructor: SafeConstructor,
             depth: int, count: list[int]) -> Node:
    """Node -> ``Node``; ``count`` is shared so aliases expanded many times add up."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise RulesError(f"{source}:{line}: more than {MAX_NODES:,} values (after expanding YAML aliases)")
    if depth > MAX_DEPTH:
        raise RulesError(f"{source}:{line}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Node] = {}
        for key, value in node.value:
            key_line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                raise RulesError(f"{source}:{key_line}: keys must be plain names")
            if key.value in out:
                raise RulesError(f"{source}:{key_line}: duplicate key '{key.value}'")
            out[key.value] = _convert(value, key_line, source, constructor, depth + 1, count)
        return Node(out, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(item, item.start_mark.line + 1, source, constructor, depth + 1, count)
                     for item in node.value], line)
    value = constructor.construct_object(node, deep=True)
    return Node(value if value is None or isinstance(value, str) else Written(node.value, value), line)


def suggest(name: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else nothing."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(node: Node) -> str:
    """A value as an error message quotes it: scalars as written."""
    if isinstance(node.value, dict):
        return "a mapping"
    if isinstance(node.value, list):
        return "a list"
    if node.value is None:
        return "nothing"
    return f"'{node.value}'"
