"""Rules-file validation (personalization.core.rules.loader): each kind of problem stops the load
with ``file:line: where: what``. Line numbers are counted in the literal texts below (line 1 is
the ``version`` line)."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from personalization.config.settings import DEFAULT_RULES
from personalization.core.rules import Need, RuleSet, RulesError
from personalization.core.rules.features import Feature

GOOD = """\
version: "t1"
features:
  views_10m: {agg: count, event_type: product_view, over: 10m}
  carts_1d: {agg: count, event_type: [add_to_cart, favorite], over: 1d}
  events_session: {agg: count, over: session}
  sessions_7d: {agg: sessions, over: 7d}
  dwell_7d: {agg: sum, field: dwell_ms, over: 7d}
  last_category: {agg: last, field: category_id, over: lifetime}
  items_session: {agg: distinct, field: item_id, over: session}
scores:
  points: {weights: {click: 1, purchase: 2.5}}
segments:
  hot:
    entry: views_10m >= 3 and last_category == "shoes"
    priority: 2
  vip: {parent: hot, entry: points > 10, exit: points < 5}
  waiting: {}
triggers:
  wait: {on: add_to_cart, within: 1h, then: {enter: waiting}}
"""


def error(text: str) -> str:
    with pytest.raises(RulesError) as raised:
        RuleSet(textwrap.dedent(text), "rules/t.yaml")
    return str(raised.value)


def test_a_valid_file_loads_with_defaults_and_canonical_values() -> None:
    rules = RuleSet(GOOD, "rules/t.yaml")
    assert rules.version == "t1"
    assert rules.features[:2] == (
        Feature("views_10m", "count", 600_000, ("product_view",)),
        Feature("carts_1d", "count", 86_400_000, ("add_to_cart", "favorite")),
    )
    assert rules.scores[0].weights == {"click": 1, "purchase": 2.5}
    assert rules.scores[0].half_life_ms is None
    hot, vip, waiting = rules.segments
    assert (hot.priority, vip.priority, vip.parent) == (2, 0, "hot")
    assert hot.exit.name == "hot.exit"
    assert hot.exit.text == 'not (views_10m >= 3 and last_category == "shoes")'
    assert hot.exit.names == ("last_category", "views_10m")
    assert (waiting.entry, waiting.exit) == (None, None)
    assert rules.triggers["wait"].within_ms == 3_600_000


def test_scalars_are_kept_as_written_and_numbers_as_yaml_reads_them() -> None:
    rules = RuleSet(textwrap.dedent("""\
        version: 1.10
        scores:
          points: {weights: {click: 1, purchase: 2.5}, half_life: 7d}
        segments:
          always: {entry: true, priority: 0x10}
          never: {entry: false}
        """), "rules/t.yaml")
    assert (rules.version, type(rules.version)) == ("1.10", str)  # a plain str: encoders take it as text
    assert [type(w) for w in rules.scores[0].weights.values()] == [int, float]
    always, never = rules.segments
    assert (always.entry.text, type(always.entry.text), always.exit.text, always.priority) == (
        "true", str, "not (true)", 16)
    assert never.entry.text == "false"


def test_requirements_list_exactly_the_aggregates_the_rules_read() -> None:
    needs = RuleSet(GOOD).requirements
    assert needs.session == {Need("count"), Need("distinct", "item_id")}
    assert needs.lifetime == {Need("last", "category_id")}
    assert needs.windows == {
        600_000: {Need("count")},
        86_400_000: {Need("count")},
        604_800_000: {Need("sessions"), Need("sum", "dwell_ms")},
    }


def test_a_rule_set_pickles_as_its_text() -> None:
    rules = pickle.loads(pickle.dumps(RuleSet(GOOD, "rules/t.yaml")))
    assert (rules.version, rules.source, rules.text) == ("t1", "rules/t.yaml", GOOD)


def test_load_names_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text('version: "1"\nsegments:\n  hot: {entry: views > 1}\n')
    with pytest.raises(RulesError) as raised:
        RuleSet.load(path)
    assert str(raised.value) == f"{path}:3: segment 'hot' entry: unknown feature or score 'views'"


def test_the_default_rules_file_loads() -> None:
    rules = RuleSet.load(DEFAULT_RULES)
    assert [s.name for s in rules.segments] == [
        "high_intent", "engaged_reader", "cart_abandoner", "engaged_buyer", "loyal_customer", "engaged",
        "casual_browser",
    ]


ERRORS = [
    # YAML and file structure
    ("", "rules/t.yaml:1: the rules file is empty"),
    ("""\
     version: "1"
     segments:
       hot: {entry: x
     """, "rules/t.yaml:4: invalid YAML: while parsing a flow mapping, expected ',' or '}', but got '<stream end>'"),
    ("- 1\n", "rules/t.yaml:1: expected a mapping, got a list"),
    ("features: {}\n", "rules/t.yaml:1: missing 'version'"),
    ("version:\n", "rules/t.yaml:1: version must be text, got nothing"),
    ("""\
     version: "1"
     segmets: {}
     """, "rules/t.yaml:2: unknown key 'segmets' (did you mean 'segments'?)"),
    ("""\
     version: "1"
     features: {}
     features: {}
     """, "rules/t.yaml:3: duplicate key 'features'"),
    ("""\
     version: "1"
     features: [a]
     """, "rules/t.yaml:2: features: expected a mapping, got a list"),
    # features
    ("""\
     version: "1"
     features:
       views-10m: {agg: count, over: 10m}
     """, "rules/t.yaml:3: feature 'views-10m': a name must be letters, digits and _, "
          "not start with a digit, and not be a keyword"),
    ("""\
     version: "1"
     features:
       not: {agg: count, over: 10m}
     """, "rules/t.yaml:3: feature 'not': a name must be letters, digits and _, "
          "not start with a digit, and not be a keyword"),
    ("""\
     version: "1"
     features:
       views: {agg: count}
     """, "rules/t.yaml:3: feature 'views': missing 'over'"),
    ("""\
     version: "1"
     features:
       views:
         agg: count
         over: 10m
         window: 10m
     """, "rules/t.yaml:6: feature 'views': unknown key 'window' (expected one of: agg, event_type, field, over)"),
    ("""\
     version: "1"
     features:
       views: {agg: cnt, over: 10m}
     """, "rules/t.yaml:3: feature 'views': unknown agg 'cnt' (did you mean 'count'?)"),
    ("""\
     version: "1"
     features:
       views: {agg: average, over: 10m}
     """, "rules/t.yaml:3: feature 'views': unknown agg 'average' "
          "(expected one of: count, distinct, last, max, sessions, sum)"),
    ("""\
     version: "1"
     features:
       views:
         agg: count
         over: weekly
     """, "rules/t.yaml:5: feature 'views': over must be session, lifetime or a duration like 10m, 24h or 7d, "
          "got 'weekly'"),
    ("""\
     version: "1"
     features:
       views: {agg: count, over: 0m}
     """, "rules/t.yaml:3: feature 'views': over must be session, lifetime or a duration like 10m, 24h or 7d, "
          "got '0m'"),
    ("""\
     version: "1"
     features:
       views: {agg: count, event_type: product_veiw, over: 10m}
     """, "rules/t.yaml:3: feature 'views': unknown event type 'product_veiw' (did you mean 'product_view'?)"),
    ("""\
     version: "1"
     features:
       views:
         agg: count
         over: 10m
         event_type: [page_view, buy]
     """, "rules/t.yaml:6: feature 'views': unknown event type 'buy' (expected one of: page_view, product_view, "
          "click, scroll, add_to_cart, favorite, purchase)"),
    ("""\
     version: "1"
     features:
       dwell: {agg: sum, over: session}
     """, "rules/t.yaml:3: feature 'dwell': agg 'sum' needs 'field'"),
    ("""\
     version: "1"
     features:
       dwell: {agg: sum, field: item_id, over: session}
     """, "rules/t.yaml:3: feature 'dwell': agg 'sum' needs a numeric field (dwell_ms, scroll_depth), got 'item_id'"),
    ("""\
     version: "1"
     features:
       dwell: {agg: max, field: dwel_ms, over: session}
     """, "rules/t.yaml:3: feature 'dwell': unknown field 'dwel_ms' (did you mean 'dwell_ms'?)"),
    ("""\
     version: "1"
     features:
       dwell: {agg: sum, field: dwell_ms, event_type: page_view, over: session}
     """, "rules/t.yaml:3: feature 'dwell': 'event_type' does not apply to agg 'sum'"),
    ("""\
     version: "1"
     features:
       views: {agg: count, field: dwell_ms, over: session}
     """, "rules/t.yaml:3: feature 'views': 'field' does not apply to agg 'count'"),
    ("""\
     version: "1"
     features:
       visits: {agg: sessions, over: session}
     """, "rules/t.yaml:3: feature 'visits': agg 'sessions' needs over: lifetime or a window"),
    # scores
    ("""\
     version: "1"
     scores:
       points: {weights: {clicks: 1}}
     """, "rules/t.yaml:3: score 'points': unknown event type 'clicks' (did you mean 'click'?)"),
    ("""\
     version: "1"
     scores:
       points: {weights: {click: high}}
     """, "rules/t.yaml:3: score 'points': weight of 'click' must be a number, got 'high'"),
    ("""\
     version: "1"
     scores:
       points: {weights: {}}
     """, "rules/t.yaml:3: score 'points': weights must not be empty"),
    ("""\
     version: "1"
     scores:
       points: {weights: [click]}
     """, "rules/t.yaml:3: score 'points': expected a mapping, got a list"),
    ("""\
     version: "1"
     scores:
       points:
         weights: {click: 1}
         half_life: 7 days
     """, "rules/t.yaml:5: score 'points': half_life must be a duration like 10m, 24h or 7d, got '7 days'"),
    ("""\
     version: "1"
     features:
       points: {agg: count, over: lifetime}
     scores:
       points: {weights: {click: 1}}
     """, "rules/t.yaml:5: score 'points': name already used by a feature"),
    # segments and their conditions
    ("""\
     version: "1"
     features:
       product_views_10m: {agg: count, event_type: product_view, over: 10m}
     segments:
       high_intent:
         entry: product_view_10m >= 3
     """, "rules/t.yaml:6: segment 'high_intent' entry: unknown feature or score 'product_view_10m' "
          "(did you mean 'product_views_10m'?)"),
    ("""\
     version: "1"
     features:
       views: {agg: count, over: 10m}
     segments:
       hot:
         entry: views >= 3
         exit: views <
     """, "rules/t.yaml:7: segment 'hot' exit: syntax error at column 8: unexpected end of expression"),
    ("""\
     version: "1"
     features:
       views: {agg: count, over: 10m}
     segments:
       hot:
         entry: views >= 3 and views + 1
     """, "rules/t.yaml:6: segment 'hot' entry: type error at column 12: 'and' needs booleans, got boolean and number"),
    ("""\
     version: "1"
     features:
       views: {agg: count, over: 10m}
     segments:
       hot:
         entry: views * 2
     """, "rules/t.yaml:6: segment 'hot' entry: condition must be boolean, got number"),
    ("""\
     version: "1"
     features:
       category: {agg: last, field: category_id, over: lifetime}
     segments:
       shoes:
         entry: category == 1
     """, "rules/t.yaml:6: segment 'shoes' entry: type error at column 10: '==' needs two values of one type, "
          "got string and number"),
    ("""\
     version: "1"
     segments:
       hot:
         entry: true
         priority: high
     """, "rules/t.yaml:5: segment 'hot': priority must be an integer, got 'high'"),
    ("""\
     version: "1"
     segments:
       hot:
         entry: true
         exit: [false]
     """, "rules/t.yaml:5: segment 'hot': exit must be text, got a list"),
    ("""\
     version: "1"
     segments:
       hot:
         entry: true
         enter: true
     """, "rules/t.yaml:5: segment 'hot': unknown key 'enter' (did you mean 'entry'?)"),
    ("""\
     version: "1"
     segments:
       hot: {entry: true}
       vip:
         parent: hott
         entry: true
     """, "rules/t.yaml:5: segment 'vip': unknown parent segment 'hott' (did you mean 'hot'?)"),
    ("""\
     version: "1"
     segments:
       a: {parent: c, entry: true}
       b: {parent: a, entry: true}
       c: {parent: b, entry: true}
     """, "rules/t.yaml:3: segment 'a': parent cycle a -> c -> b -> a"),
    ("""\
     version: "1"
     segments:
       limbo: {priority: 1}
     """, "rules/t.yaml:3: segment 'limbo': no 'entry' condition and no trigger enters it"),
    # triggers
    ("""\
     version: "1"
     segments:
       abandoner: {priority: 1}
     triggers:
       abandoned: {on: add_to_cart, unless: purchase, within: 24h, then: {enter: abandoners}}
     """, "rules/t.yaml:5: trigger 'abandoned': unknown segment 'abandoners' (did you mean 'abandoner'?)"),
    ("""\
     version: "1"
     segments:
       abandoner: {priority: 1}
     triggers:
       abandoned:
         on: add_to_cart
         unless: purchase
         then: {enter: abandoner}
     """, "rules/t.yaml:7: trigger 'abandoned': 'unless' needs 'within'"),
    ("""\
     version: "1"
     segments:
       abandoner: {priority: 1}
     triggers:
       abandoned:
         on: add_to_cart
         within: 24 hours
         then: {enter: abandoner}
     """, "rules/t.yaml:7: trigger 'abandoned': within must be a duration like 10m, 24h or 7d, got '24 hours'"),
    ("""\
     version: "1"
     segments:
       abandoner: {priority: 1}
     triggers:
       abandoned: {on: add_to_cart, then: {enter: abandoner, exit: abandoner}}
     """, "rules/t.yaml:5: trigger 'abandoned': then must be {enter: <segment>} or {exit: <segment>}"),
    ("""\
     version: "1"
     segments:
       abandoner: {priority: 1}
     triggers:
       abandoned: {on: add_to_cart, then: {join: abandoner}}
     """, "rules/t.yaml:5: trigger 'abandoned': unknown key 'join' (expected one of: enter, exit)"),
    ("""\
     version: "1"
     segments:
       engaged: {entry: true}
     triggers:
       quiet:
         inactive_for: 14d
         on: click
         then: {exit: engaged}
     """, "rules/t.yaml:7: trigger 'quiet': 'on' cannot be combined with 'inactive_for'"),
    ("""\
     version: "1"
     segments:
       engaged: {entry: true}
     triggers:
       quiet:
         within: 14d
         then: {exit: engaged}
     """, "rules/t.yaml:5: trigger 'quiet': needs 'on' (event types) or 'inactive_for'"),
    ("""\
     version: "1"
     segments:
       engaged: {entry: true}
     triggers:
       quiet: {inactive_for: 14d}
     """, "rules/t.yaml:5: trigger 'quiet': missing 'then'"),
    # scalar types, each reported at its own line through the schema's errors
    ("""\
     version: "1"
     segments:
       hot:
         entry: true
         priority: 2.0
     """, "rules/t.yaml:5: segment 'hot': priority must be an integer, got '2.0'"),
    ("""\
     version: "1"
     segments:
       hot:
         entry: true
         priority: "2"
     """, "rules/t.yaml:5: segment 'hot': priority must be an integer, got '2'"),
    ("""\
     version: "1"
     scores:
       points:
         weights:
           click: 1
           purchase: yes
     """, "rules/t.yaml:6: score 'points': weight of 'purchase' must be a number, got 'yes'"),
    ("""\
     version: "1"
     scores:
       points:
         weights:
           click: "1"
     """, "rules/t.yaml:5: score 'points': weight of 'click' must be a number, got '1'"),
    ("""\
     version: "1"
     segments:
       hot:
         entry: true
         exit:
     """, "rules/t.yaml:5: segment 'hot': exit has no value: give one, or leave the key out"),
    ("""\
     version: ""
     """, "rules/t.yaml:1: version must be text, got ''"),
    ("""\
     version: "1"
     features:
       views:
         agg: count
         over: 10m
         event_type: []
     """, "rules/t.yaml:6: feature 'views': event_type must not be empty"),
    ("""\
     version: "1"
     features:
       views:
         agg: count
         over: {minutes: 10}
     """, "rules/t.yaml:5: feature 'views': over must be session, lifetime or a duration like 10m, 24h or 7d, "
          "got a mapping"),
    ("""\
     version: "1"
     features:
       views: count
     """, "rules/t.yaml:3: feature 'views': expected a mapping, got 'count'"),
    # a check across keys of one entry is reported at the line of the key it is about
    ("""\
     version: "1"
     features:
       dwell:
         agg: sum
         field: dwell_ms
         over: session
         event_type: page_view
     """, "rules/t.yaml:7: feature 'dwell': 'event_type' does not apply to agg 'sum'"),
    ("""\
     version: "1"
     features:
       dwell:
         agg: max
         over: session
         field: category_id
     """, "rules/t.yaml:6: feature 'dwell': agg 'max' needs a numeric field (dwell_ms, scroll_depth), "
          "got 'category_id'"),
    ("""\
     version: "1"
     segments:
       engaged: {entry: true}
     triggers:
       quiet:
         inactive_for: 14d
         then:
           exit: engaged
         within: 1h
     """, "rules/t.yaml:9: trigger 'quiet': 'within' cannot be combined with 'inactive_for'"),
    ("""\
     version: "1"
     segments:
       engaged: {entry: true}
     triggers:
       quiet:
         inactive_for: 14d
         then:
           exit: engagd
     """, "rules/t.yaml:8: trigger 'quiet': unknown segment 'engagd' (did you mean 'engaged'?)"),
    ("""\
     version: "1"
     segments:
       engaged: {entry: true}
     triggers:
       quiet:
         inactive_for: 14d
         then:
           exit: engaged
           exot: engaged
     """, "rules/t.yaml:9: trigger 'quiet': unknown key 'exot' (did you mean 'exit'?)"),
    # of several problems, the one nearest the top; a misspelt key, not the key it leaves missing
    ("""\
     version: "1"
     features:
       views:
         agg: count
         ovr: 10m
     """, "rules/t.yaml:5: feature 'views': unknown key 'ovr' (did you mean 'over'?)"),
    ("""\
     version: "1"
     features:
       views: {agg: count, over: 10m, window: 1h}
     segmets:
       hot: {entry: true}
     """, "rules/t.yaml:3: feature 'views': unknown key 'window' (expected one of: agg, event_type, field, over)"),
    ("""\
     version: "1"
     features:
       views: {agg: cnt, over: 10m}
     triggers:
       quiet: {inactive_for: 14d, then: {exit: engaged}}
     """, "rules/t.yaml:3: feature 'views': unknown agg 'cnt' (did you mean 'count'?)"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m.split(": ", 1)[1][:60] for _, m in ERRORS])
def test_each_problem_stops_the_load_with_file_line_and_reason(text: str, message: str) -> None:
    assert error(text) == message


# A published rules text is hostile input: whatever it holds, loading it raises only RulesError.

def test_a_deeply_nested_text_is_rejected_with_a_reason() -> None:
    text = GOOD + "extra: " + "[" * 5_000 + "]" * 5_000 + "\n"
    with pytest.raises(RulesError, match="nested"):
        RuleSet(text, "rules/t.yaml")


def test_a_very_long_expression_is_a_rules_error_not_a_recursion_error() -> None:
    long = " and ".join(["views_10m > 1"] * 10_000)
    text = GOOD.replace('entry: views_10m >= 3 and last_category == "shoes"', f"entry: {long}")
    with pytest.raises(RulesError):
        RuleSet(text, "rules/t.yaml")


def test_a_100k_term_expression_is_rejected() -> None:
    long = " and ".join(["a"] * 100_000)
    text = GOOD.replace('entry: views_10m >= 3 and last_category == "shoes"', f"entry: {long}")
    with pytest.raises(RulesError, match="characters"):
        RuleSet(text, "rules/t.yaml")


def test_yaml_aliases_do_not_expand_without_limit() -> None:
    bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for level in range(1, 9):
        bomb.append(f"{chr(97 + level)}: &{chr(97 + level)} [{', '.join(['*' + chr(96 + level)] * 10)}]")
    with pytest.raises(RulesError, match="aliases"):
        RuleSet("version: t\n" + "\n".join(bomb) + "\n", "rules/t.yaml")


def test_an_oversized_text_is_rejected_before_parsing() -> None:
    with pytest.raises(RulesError, match="characters"):
        RuleSet(GOOD + "#" + "x" * 300_000 + "\n", "rules/t.yaml")


# Random trees shaped like a rules file (sections of named entries of keys), with the format's
# own words as keys and values, so most reach the checks past the top level.
_WORDS = st.sampled_from([
    "agg", "over", "event_type", "field", "weights", "half_life", "parent", "entry", "exit", "priority", "on",
    "unless", "within", "inactive_for", "then", "enter", "count", "sum", "max", "last", "sessions", "distinct",
    "session", "lifetime", "10m", "0m", "click", "purchase", "dwell_ms", "item_id", "a", "hot", "a > 1", "true", "",
])
_SCALARS = st.one_of(_WORDS, st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(_WORDS, _SCALARS, max_size=3))
_ENTRIES = st.dictionaries(st.sampled_from(["a", "hot", "views", "not", "1x", "x-y"]),
                           st.dictionaries(_WORDS, _VALUES, max_size=5), max_size=3)
_RULES = st.fixed_dictionaries({}, optional={
    "version": _SCALARS, "features": _ENTRIES, "scores": _ENTRIES, "segments": _ENTRIES, "triggers": _ENTRIES,
    "segmets": _VALUES,
})


@settings(max_examples=300, deadline=None)
@given(tree=_RULES)
def test_any_yaml_tree_loads_or_is_a_rules_error(tree: dict) -> None:
    try:
        RuleSet(yaml.safe_dump(tree), "rules/t.yaml")
    except RulesError as err:
        assert str(err).startswith("rules/t.yaml:")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_text_loads_or_is_a_rules_error(data: bytes) -> None:
    try:
        RuleSet(data.decode("latin-1"), "rules/t.yaml")
    except RulesError as err:
        assert str(err).startswith("rules/t.yaml")
