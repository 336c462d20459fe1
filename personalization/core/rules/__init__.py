"""The rules engine: features, scores, segments and timed triggers declared in a YAML file.

Pure Python, no Flink: ``RuleSet`` compiles a validated rules file; the caller keeps one
``SegmentState`` per user and feeds it events, ``FeatureInputs`` and watermarks.

May import: the rest of ``core``, PyYAML and pydantic (the rules file's shape); nothing outside
``core`` (``core``'s contract).
"""

from personalization.core.rules.engine import Cause, RuleSet, SegmentChange, SegmentState
from personalization.core.rules.features import Aggregates, FeatureInputs, Need, Requirements
from personalization.core.rules.scores import decay_score, score_at
from personalization.core.rules.source import RulesError

__all__ = [
    "Aggregates", "Cause", "FeatureInputs", "Need", "Requirements", "RuleSet", "RulesError",
    "SegmentChange", "SegmentState", "decay_score", "score_at",
]
