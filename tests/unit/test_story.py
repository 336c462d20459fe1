"""The demo's story: segment sizes replayed from changes, the storyteller, the compressed trigger."""

import pytest

from personalization.config.settings import DEFAULT_RULES
from personalization.core.rules import RuleSet
from personalization.tools.story import compress_trigger, describe_cause, sizes_over_time, storyteller, timeline


def _change(user: str, seq: int, segment: str, action: str, t: int, rule: str = "r", **features) -> dict:
    return {"user_id": user, "seq": seq, "segment": segment, "action": action, "event_time": t,
            "rules_version": "v", "cause": {"rule": rule, "features": features}}


CHANGES = [
    _change("b", 1, "high_intent", "enter", 20),
    _change("a", 1, "high_intent", "enter", 10, "high_intent.entry", product_views_10m=3),
    _change("a", 2, "cart_abandoner", "enter", 30, "cart_abandoned"),
    _change("a", 3, "high_intent", "exit", 40, "high_intent_lapsed"),
    _change("a", 4, "cart_abandoner", "exit", 50, "cart_recovered"),
]


def test_sizes_are_replayed_in_event_time_order_whatever_the_input_order():
    assert sizes_over_time(CHANGES) == {"high_intent": [(10, 1), (20, 2), (40, 1)],
                                        "cart_abandoner": [(30, 1), (50, 0)]}
    assert sizes_over_time(list(reversed(CHANGES))) == sizes_over_time(CHANGES)


def test_the_storyteller_entered_the_preferred_segment_and_its_timeline_is_in_seq_order():
    assert storyteller(CHANGES, prefer_segment="cart_abandoner") == "a"
    assert storyteller(CHANGES, prefer_segment="engaged") == "a"  # nobody entered it: the most varied story
    assert storyteller([]) is None
    assert [c["seq"] for c in timeline(list(reversed(CHANGES)), "a")] == [1, 2, 3, 4]
    assert describe_cause(CHANGES[1]["cause"]) == "high_intent.entry (product_views_10m = 3)"
    assert describe_cause({"rule": "cart_recovered", "features": {}}) == "cart_recovered"


def test_compressing_a_trigger_changes_only_its_deadline_and_marks_the_version():
    text = DEFAULT_RULES.read_text()
    compressed = compress_trigger(text, "cart_abandoned", "10m")
    original, rules = RuleSet(text, "default"), RuleSet(compressed, "compressed")
    assert rules.version == f"{original.version}+cart_abandoned-within-10m"
    changed = [(a, b) for a, b in zip(text.splitlines(), compressed.splitlines()) if a != b]
    assert len(changed) == 2 and changed[1] == ("    within: 24h", "    within: 10m")
    with pytest.raises(ValueError, match="no deadline trigger 'cart_recovered'"):
        compress_trigger(text, "cart_recovered", "10m")
