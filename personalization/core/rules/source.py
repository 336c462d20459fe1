"""Rules-file text -> a tree of values that remember their line, and the one error type.

PyYAML's node graph keeps marks, its constructed values do not; so the file is composed into
nodes and converted here, keeping the line of every key for error messages. Keys are taken
as written: YAML 1.1 would read a bare ``on:`` key as the boolean true.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

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


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value: ``dict[str, Node]``, ``list[Node]`` or a scalar, with its 1-based line.

    A value under a key carries the key's line; ``text`` is a scalar exactly as written.
    """

    value: Any
    line: int
    text: str | None = None


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
    return Node(constructor.construct_object(node, deep=True), line, node.value)


def suggest(name: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else nothing."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(node: Node) -> str:
    if isinstance(node.value, dict):
        return "a mapping"
    if isinstance(node.value, list):
        return "a list"
    if node.value is None:
        return "nothing"
    return f"'{node.text}'"


@dataclass(frozen=True, slots=True)
class Reader:
    """Typed access to a rules tree; every failure names the file, the line and the place."""

    source: str

    def fail(self, node: Node, where: str, problem: str) -> NoReturn:
        place = f"{where}: " if where else ""
        raise RulesError(f"{self.source}:{node.line}: {place}{problem}")

    def fields(self, node: Node, where: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Node]:
        """A mapping with only ``allowed`` keys and all ``required`` ones."""
        if not isinstance(node.value, dict):
            self.fail(node, where, f"expected a mapping, got {describe(node)}")
        allowed = sorted(allowed)
        for key, child in node.value.items():
            if key not in allowed:
                hint = suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.fail(child, where, f"unknown key '{key}'{hint}")
        for key in required:
            if key not in node.value:
                self.fail(node, where, f"missing '{key}'")
        return node.value

    def section(self, node: Node | None, where: str) -> dict[str, Node]:
        """A mapping of named entries; absent or null means none."""
        if node is None or node.value is None:
            return {}
        if not isinstance(node.value, dict):
            self.fail(node, where, f"expected a mapping, got {describe(node)}")
        return node.value

    def text(self, node: Node, where: str, key: str) -> str:
        text = node.text
        if isinstance(node.value, (dict, list)) or node.value is None or not text:
            self.fail(node, where, f"{key} must be text, got {describe(node)}")
        return text

    def integer(self, node: Node, where: str, key: str) -> int:
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            self.fail(node, where, f"{key} must be an integer, got {describe(node)}")
        return node.value

    def number(self, node: Node, where: str, key: str) -> float:
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            self.fail(node, where, f"{key} must be a number, got {describe(node)}")
        return node.value

    def choice(self, node: Node, where: str, key: str, options: Iterable[str]) -> str:
        value = self.text(node, where, key)
        options = list(options)
        if value not in options:
            hint = suggest(value, options) or f" (expected one of: {', '.join(options)})"
            self.fail(node, where, f"unknown {key} '{value}'{hint}")
        return value

    def choices(self, node: Node, where: str, key: str, options: Iterable[str]) -> tuple[str, ...]:
        """One option or a list of them, in file order without repeats."""
        items = node.value if isinstance(node.value, list) else [node]
        if not items:
            self.fail(node, where, f"{key} must not be empty")
        return tuple(dict.fromkeys(self.choice(item, where, key, options) for item in items))
