"""The rule expression language (personalization.core.rules.expressions): parsing, precedence,
type checking and every error message. Names: n, m (numbers), b, c (booleans), s (string)."""

from __future__ import annotations

import pytest

from personalization.core.rules.expressions import ExpressionError, Type, compile_condition

NAMES = {"n": Type.NUMBER, "m": Type.NUMBER, "b": Type.BOOLEAN, "c": Type.BOOLEAN, "s": Type.STRING}
VALUES = {"n": 4, "m": 0, "b": True, "c": False, "s": "shoes"}


def holds(text: str, **values) -> bool:
    return compile_condition("r", text, NAMES).test({**VALUES, **values})


@pytest.mark.parametrize(("text", "expected"), [
    ("n >= 4", True),
    ("n > 4", False),
    ("n == 4 and s == 'shoes'", True),
    ('s != "shoes"', False),
    ("1 + 2 * 3 == 7", True),             # * before +
    ("(1 + 2) * 3 == 9", True),
    ("10 - 4 - 3 == 3", True),            # left associative
    ("12 / 3 / 2 == 2", True),
    ("-n + 1 == -3", True),
    ("--n == 4", True),
    ("n / m == 0", True),                 # x / 0 is 0
    ("n * 0.5 == 2.0", True),
    ("180_000 > 179_999", True),
    ("b or c and c", True),               # and before or
    ("(b or c) and c", False),
    ("not c and b", True),                # not before and
    ("not n > 5", True),                  # comparison before not
    ("not not b", True),
    ("b == true", True),
    ("c != false", False),
    ("true", True),
])
def test_evaluation_and_precedence(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_and_or_short_circuit_so_a_guard_protects_the_right_side() -> None:
    calls = []
    condition = compile_condition("r", "c and n > 1", NAMES)

    class Spy(dict):
        def __getitem__(self, key):
            calls.append(key)
            return super().__getitem__(key)

    assert condition.test(Spy(VALUES)) is False
    assert calls == ["c"]


def test_condition_records_its_name_text_and_the_names_it_reads_sorted() -> None:
    condition = compile_condition("hot.entry", "s == 'x' or n + m > 1 or n > 2", NAMES)
    assert (condition.name, condition.text, condition.names) == ("hot.entry", "s == 'x' or n + m > 1 or n > 2",
                                                                ("m", "n", "s"))


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("n >", "syntax error at column 4: unexpected end of expression"),
    ("n > > 1", "syntax error at column 5: unexpected '>'"),
    ("n 1", "syntax error at column 3: unexpected '1'"),
    ("(n > 1", "syntax error at column 7: expected ')', got end of expression"),
    ("(n > 1 b", "syntax error at column 8: expected ')', got 'b'"),
    ("n > 1)", "syntax error at column 6: unexpected ')'"),
    ("n = 1", "syntax error at column 3: unexpected character '=' (use '==' to compare)"),
    ("n > 1 && b", "syntax error at column 7: unexpected character '&'"),
    ("s == 'shoes", "syntax error at column 6: unterminated string"),
    ("1 < n < 5", "syntax error at column 7: comparisons cannot be chained; use 'and'"),
    ("n > 1 and", "syntax error at column 10: unexpected end of expression"),
    ("10m > n", "syntax error at column 3: unexpected 'm'"),
    ("nn > 1", "unknown feature or score 'nn' (did you mean 'n'?)"),
    ("views > 1", "unknown feature or score 'views'"),
    ("b + 1 > 0", "type error at column 3: '+' needs numbers, got boolean and number"),
    ("s * 2 > 0", "type error at column 3: '*' needs numbers, got string and number"),
    ("-b", "type error at column 1: '-' needs a number, got boolean"),
    ("n and b", "type error at column 3: 'and' needs booleans, got number and boolean"),
    ("b or s", "type error at column 3: 'or' needs booleans, got boolean and string"),
    ("not n", "type error at column 1: 'not' needs a boolean, got number"),
    ("b < c", "type error at column 3: '<' needs numbers, got boolean and boolean"),
    ("s >= 'a'", "type error at column 3: '>=' needs numbers, got string and string"),
    ("n == b", "type error at column 3: '==' needs two values of one type, got number and boolean"),
    ("s != 1", "type error at column 3: '!=' needs two values of one type, got string and number"),
    ("n + 1", "condition must be boolean, got number"),
    ("9" * 400 + " / (n + 1) > 3",   # evaluated, 400 digits / 5 raised OverflowError on every event
     "number at column 1 is too large (at most 9_007_199_254_740_992): arithmetic on it could overflow"),
    ("n > 9_007_199_254_740_993", "number at column 5 is too large (at most 9_007_199_254_740_992): "
                                  "arithmetic on it could overflow"),
    ("s", "condition must be boolean, got string"),
])
def test_errors_name_the_problem_and_the_column(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as error:
        compile_condition("r", text, NAMES)
    assert str(error.value) == message


def test_the_largest_literal_is_accepted() -> None:
    assert holds("n < 9_007_199_254_740_992.5")
