"""The validated content of a rules file: what the loader produces and the engine runs."""

from __future__ import annotations

from dataclasses import dataclass

from personalization.core.rules.expressions import Condition
from personalization.core.rules.features import Feature
from personalization.core.rules.scores import Score


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    parent: str | None
    entry: Condition | None  # None: only triggers enter it
    exit: Condition | None  # defaults to ``not (entry)``; None: only triggers (or the parent) end it
    priority: int


@dataclass(frozen=True, slots=True)
class Trigger:
    """``on`` events arm ``on_ts + within_ms`` (cancelled by an ``unless`` event in between),
    or act at once without ``within_ms``; ``inactive_ms`` arms ``latest event + inactive_ms``."""

    name: str
    action: str  # enter | exit
    segment: str
    on: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    within_ms: int | None = None
    inactive_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    version: str
    features: tuple[Feature, ...]
    scores: tuple[Score, ...]
    segments: tuple[Segment, ...]  # parents before children, otherwise in file order
    triggers: tuple[Trigger, ...]
