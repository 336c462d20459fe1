"""The rule expression language: tokenizer, recursive-descent parser, type checker, compiler.

Rule text is never given to ``eval``: it is parsed into a small tree, checked against the
declared feature and score names, and compiled into nested closures over a dict of values.

Grammar, loosest binding first::

    expr       := and_expr ('or' and_expr)*
    and_expr   := not_expr ('and' not_expr)*
    not_expr   := 'not' not_expr | comparison
    comparison := sum (('<' | '<=' | '>' | '>=' | '==' | '!=') sum)?
    sum        := product (('+' | '-') product)*
    product    := unary (('*' | '/') unary)*
    unary      := '-' unary | atom
    atom       := NUMBER | STRING | 'true' | 'false' | NAME | '(' expr ')'

Numbers may use ``_`` between digits (``180_000``); strings are quoted with ' or " and have
no escapes. ``x / 0`` is 0, so a ratio over nothing never stops the job; number literals are
at most 2**53 (9_007_199_254_740_992).
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from personalization.core.rules.source import suggest

Value = float | int | bool | str
Env = Mapping[str, Value]
Fn = Callable[[Env], Any]


class Type(str, enum.Enum):
    NUMBER = "number"
    BOOLEAN = "boolean"
    STRING = "string"


class ExpressionError(ValueError):
    """A syntax, name or type error; the loader prefixes the file, line and rule."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled boolean rule: ``test(values)`` and the names whose values it reads."""

    name: str
    text: str
    test: Callable[[Env], bool]
    names: tuple[str, ...]


KEYWORDS = frozenset({"and", "or", "not", "true", "false"})
MAX_LITERAL = 2**53  # every integer up to it is exact as a float; a 400-digit literal / 3 raised OverflowError
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:_\d+)*(?:\.\d+(?:_\d+)*)?)
  | (?P<string>"[^"]*"|'[^']*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|<|>|[-+*/()])
""", re.VERBOSE)
_COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
                "==": operator.eq, "!=": operator.ne}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                                  "/": lambda a, b: a / b if b else 0}


class _Token(NamedTuple):
    kind: str  # number, string, name, keyword, op, end
    text: str
    column: int  # 1-based

    def describe(self) -> str:
        return "end of expression" if self.kind == "end" else f"'{self.text}'"


@dataclass(frozen=True, slots=True)
class _Node:
    op: str  # literal, name, or an operator: not, neg, and, or, + - * /, comparisons
    column: int
    args: tuple[_Node, ...] = ()
    value: Any = None


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            if char in "\"'":
                raise ExpressionError(f"syntax error at column {pos + 1}: unterminated string")
            hint = " (use '==' to compare)" if char == "=" else ""
            raise ExpressionError(f"syntax error at column {pos + 1}: unexpected character '{char}'{hint}")
        kind = match.lastgroup or ""  # every alternative of the pattern is a named group
        if kind != "space":
            word = match.group()
            tokens.append(_Token("keyword" if kind == "name" and word in KEYWORDS else kind, word, pos + 1))
        pos = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def parse(self) -> _Node:
        if self.peek().kind == "end":
            raise ExpressionError("empty expression")
        node = self.or_expr()
        if self.peek().kind != "end":
            raise self.unexpected()
        return node

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self, *texts: str) -> _Token | None:
        token = self.peek()
        if token.kind in ("op", "keyword") and token.text in texts:
            self.pos += 1
            return token
        return None

    def unexpected(self) -> ExpressionError:
        token = self.peek()
        return ExpressionError(f"syntax error at column {token.column}: unexpected {token.describe()}")

    def binary(self, texts: tuple[str, ...], operand: Callable[[], _Node]) -> _Node:
        node = operand()
        while token := self.take(*texts):
            node = _Node(token.text, token.column, (node, operand()))
        return node

    def or_expr(self) -> _Node:
        return self.binary(("or",), self.and_expr)

    def and_expr(self) -> _Node:
        return self.binary(("and",), self.not_expr)

    def not_expr(self) -> _Node:
        if token := self.take("not"):
            return _Node("not", token.column, (self.not_expr(),))
        return self.comparison()

    def comparison(self) -> _Node:
        node = self.sum()
        if token := self.take(*_COMPARISONS):
            node = _Node(token.text, token.column, (node, self.sum()))
            if chained := self.take(*_COMPARISONS):
                raise ExpressionError(
                    f"syntax error at column {chained.column}: comparisons cannot be chained; use 'and'")
        return node

    def sum(self) -> _Node:
        return self.binary(("+", "-"), self.product)

    def product(self) -> _Node:
        return self.binary(("*", "/"), self.unary)

    def unary(self) -> _Node:
        if token := self.take("-"):
            return _Node("neg", token.column, (self.unary(),))
        return self.atom()

    def atom(self) -> _Node:
        token = self.peek()
        if token.kind == "number":
            self.pos += 1
            digits = token.text.replace("_", "").split(".")[0]
            if len(digits) > len(str(MAX_LITERAL)) or int(digits) > MAX_LITERAL:
                raise ExpressionError(f"number at column {token.column} is too large "
                                      f"(at most {MAX_LITERAL:_}): arithmetic on it could overflow")
            number = float(token.text) if "." in token.text else int(token.text)
            return _Node("literal", token.column, value=number)
        if token.kind == "string":
            self.pos += 1
            return _Node("literal", token.column, value=token.text[1:-1])
        if token.kind == "name":
            self.pos += 1
            return _Node("name", token.column, value=token.text)
        if self.take("true", "false"):
            return _Node("literal", token.column, value=token.text == "true")
        if self.take("("):
            node = self.or_expr()
            if not self.take(")"):
                closing = self.peek()
                raise ExpressionError(
                    f"syntax error at column {closing.column}: expected ')', got {closing.describe()}")
            return node
        raise self.unexpected()


def _type_of(value: Value) -> Type:
    if isinstance(value, bool):
        return Type.BOOLEAN
    return Type.STRING if isinstance(value, str) else Type.NUMBER


def _compile(node: _Node, names: Mapping[str, Type], used: set[str]) -> tuple[Type, Fn]:
    """Type-check ``node`` and turn it into a closure; ``used`` collects the names read."""
    if node.op == "literal":
        value = node.value
        return _type_of(value), lambda env: value
    if node.op == "name":
        name = node.value
        if name not in names:
            raise ExpressionError(f"unknown feature or score '{name}'{suggest(name, names)}")
        used.add(name)
        return names[name], operator.itemgetter(name)
    compiled = [_compile(arg, names, used) for arg in node.args]
    types = [t for t, _ in compiled]
    got = " and ".join(t.value for t in types)
    symbol = "-" if node.op == "neg" else node.op

    def require(expected: Type, what: str) -> None:
        if any(t != expected for t in types):
            raise ExpressionError(f"type error at column {node.column}: '{symbol}' needs {what}, got {got}")

    if node.op == "neg":
        require(Type.NUMBER, "a number")
        (_, operand), = compiled
        return Type.NUMBER, lambda env: -operand(env)
    if node.op == "not":
        require(Type.BOOLEAN, "a boolean")
        (_, operand), = compiled
        return Type.BOOLEAN, lambda env: not operand(env)
    (_, left), (_, right) = compiled
    if node.op == "and":
        require(Type.BOOLEAN, "booleans")
        return Type.BOOLEAN, lambda env: left(env) and right(env)
    if node.op == "or":
        require(Type.BOOLEAN, "booleans")
        return Type.BOOLEAN, lambda env: left(env) or right(env)
    if node.op in _ARITHMETIC:
        require(Type.NUMBER, "numbers")
        function = _ARITHMETIC[node.op]
        return Type.NUMBER, lambda env: function(left(env), right(env))
    if node.op in ("==", "!=") and types[0] != types[1]:
        raise ExpressionError(
            f"type error at column {node.column}: '{node.op}' needs two values of one type, got {got}")
    if node.op not in ("==", "!="):
        require(Type.NUMBER, "numbers")
    function = _COMPARISONS[node.op]
    return Type.BOOLEAN, lambda env: function(left(env), right(env))


def compile_condition(name: str, text: str, names: Mapping[str, Type]) -> Condition:
    """Parse and check ``text`` as a boolean rule over the declared ``names``."""
    used: set[str] = set()
    kind, test = _compile(_Parser(text).parse(), names, used)
    if kind != Type.BOOLEAN:
        raise ExpressionError(f"condition must be boolean, got {kind.value}")
    return Condition(name, text, test, tuple(sorted(used)))
