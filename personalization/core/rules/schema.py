"""The shape of a rules file as pydantic models, like the config: keys, required keys, scalar
types, names, choices and durations, and the checks within one feature or trigger.

A problem is raised as a pydantic error whose ``loc`` is the place in the file; the loader
turns it into ``file:line: where: what``. The errors raised here are of three kinds:
``problem`` (the whole sentence; ``at`` names the key it is about, for its line), ``expected``
(what a key takes; the loader names the key and quotes the value) and ``empty`` (an optional key
written without a value). Checks across sections (expressions against the declared names,
parents, trigger targets) are the loader's.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, StrictInt,
                      model_validator)
from pydantic_core import PydanticCustomError

from personalization.core.durations import parse_duration_ms
from personalization.core.events import BEHAVIOUR_TYPES
from personalization.core.rules.expressions import KEYWORDS
from personalization.core.rules.features import AGGREGATIONS, LIFETIME, NUMERIC_FIELDS, SESSION, TEXT_FIELDS
from personalization.core.rules.source import Written, suggest

PROBLEM = "problem"
EXPECTED = "expected"
EMPTY = "empty"

_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _problem(message: str, at: str | None = None) -> PydanticCustomError:
    """A problem stated in full; ``at``: the key it is about, so its line is the one reported."""
    return PydanticCustomError(PROBLEM, message, {"at": at} if at else None)


def _name(value: str) -> str:
    if not _NAME.fullmatch(value) or value in KEYWORDS:
        raise _problem("a name must be letters, digits and _, not start with a digit, and not be a keyword")
    return value


def _one_of(kind: str, options: tuple[str, ...]) -> AfterValidator:
    """A choice among ``options``; a near miss is named in the error (did you mean ...)."""
    def check(value: str) -> str:
        if value not in options:
            hint = suggest(value, options) or f" (expected one of: {', '.join(options)})"
            raise _problem(f"unknown {kind} '{value}'{hint}")
        return value
    return AfterValidator(check)


def _listed(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _given(value: Any) -> Any:
    """An optional key written without a value is a mistake, not the default (``exit:`` is not
    'no exit condition')."""
    if value is None:
        raise PydanticCustomError(EMPTY, "no value")
    return value


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


def _typed(value: Any) -> Any:
    """What YAML read a number as (``2`` is 2); text stays text, so ``"2"`` is not a number."""
    return value.value if isinstance(value, Written) else value


def _number(value: Any) -> float:
    value = _typed(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError(EXPECTED, "must be a number")
    return value  # an int stays an int


def _ms(value: Any) -> int:
    """The milliseconds of a duration text, 0 for anything else (not a duration either)."""
    try:
        return parse_duration_ms(value) if isinstance(value, str) else 0
    except ValueError:
        return 0


def _duration_ms(value: Any) -> int:
    if (ms := _ms(value)) <= 0:
        raise PydanticCustomError(EXPECTED, "must be a duration like 10m, 24h or 7d")
    return ms


def _over(value: Any) -> str | int:
    if value in (SESSION, LIFETIME):
        return str(value)
    if (ms := _ms(value)) <= 0:
        raise PydanticCustomError(EXPECTED, "must be session, lifetime or a duration like 10m, 24h or 7d")
    return ms


Name = Annotated[str, AfterValidator(_name)]
Text = Annotated[str, Field(min_length=1)]
Integer = Annotated[StrictInt, BeforeValidator(_typed)]
Number = Annotated[float, PlainValidator(_number)]
DurationMs = Annotated[int, PlainValidator(_duration_ms)]
Over = Annotated[str | int, PlainValidator(_over)]
Agg = Annotated[Text, _one_of("agg", AGGREGATIONS)]
FieldName = Annotated[Text, _one_of("field", tuple(sorted(NUMERIC_FIELDS + TEXT_FIELDS)))]
EventType = Annotated[Text, _one_of("event type", BEHAVIOUR_TYPES)]
EventTypes = Annotated[tuple[EventType, ...], BeforeValidator(_listed), Field(min_length=1), AfterValidator(_unique)]
"""One event type or a list of them, kept in file order without repeats."""
Given = Annotated[_T | None, BeforeValidator(_given)]
"""An optional key: absent is None, present must have a value."""
Section = Annotated[dict[Name, _T], BeforeValidator(_none_is_empty)]
"""Named entries; an absent or empty section has none."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Spec):
    agg: Agg
    over: Over
    event_type: EventTypes = ()
    field: Given[FieldName] = None

    @model_validator(mode="after")
    def _applies(self) -> FeatureSpec:
        takes_field = self.agg not in ("count", "sessions")
        if "event_type" in self.model_fields_set and self.agg != "count":
            raise _problem(f"'event_type' does not apply to agg '{self.agg}'", at="event_type")
        if self.field is not None and not takes_field:
            raise _problem(f"'field' does not apply to agg '{self.agg}'", at="field")
        if takes_field and self.field is None:
            raise _problem(f"agg '{self.agg}' needs 'field'")
        if self.agg == "sessions" and self.over == SESSION:
            raise _problem("agg 'sessions' needs over: lifetime or a window", at="over")
        if self.agg in ("sum", "max") and self.field not in NUMERIC_FIELDS:
            raise _problem(f"agg '{self.agg}' needs a numeric field ({', '.join(NUMERIC_FIELDS)}), got '{self.field}'",
                          at="field")
        return self


class ScoreSpec(_Spec):
    weights: Annotated[dict[EventType, Number], Field(min_length=1)]
    half_life: Given[DurationMs] = None


class SegmentSpec(_Spec):
    parent: Given[Text] = None
    entry: Given[Text] = None
    exit: Given[Text] = None
    priority: Integer = 0


class ThenSpec(_Spec):
    enter: Given[Text] = None
    exit: Given[Text] = None

    @model_validator(mode="after")
    def _one_action(self) -> ThenSpec:
        if len(self.model_fields_set) != 1:
            raise _problem("then must be {enter: <segment>} or {exit: <segment>}")
        return self

    @property
    def action(self) -> str:
        return "enter" if self.enter is not None else "exit"

    @property
    def segment(self) -> str:
        return self.enter or self.exit or ""


class TriggerSpec(_Spec):
    on: EventTypes = ()
    unless: EventTypes = ()
    within: Given[DurationMs] = None
    inactive_for: Given[DurationMs] = None
    then: ThenSpec

    @model_validator(mode="after")
    def _one_kind(self) -> TriggerSpec:
        given = self.model_fields_set
        if "inactive_for" in given:
            for key in ("on", "unless", "within"):
                if key in given:
                    raise _problem(f"'{key}' cannot be combined with 'inactive_for'", at=key)
        elif "on" not in given:
            raise _problem("needs 'on' (event types) or 'inactive_for'")
        elif "unless" in given and "within" not in given:
            raise _problem("'unless' needs 'within'", at="unless")
        return self


class RulesFile(_Spec):
    version: Text
    features: Section[FeatureSpec] = {}
    scores: Section[ScoreSpec] = {}
    segments: Section[SegmentSpec] = {}
    triggers: Section[TriggerSpec] = {}
