"""Event validation (personalization.udfs.validation): every rejection reason, its dead letter,
and a property test that validation never raises."""

from __future__ import annotations

import base64
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personalization.config.settings import EVENT_SCHEMA
from personalization.core.dead_letter import DeadLetter
from personalization.core.events import EVENT_TYPES, Event
from personalization.udfs.validation import EventValidator, Reason, Rejection, control_dead_letter, dead_letter

SCHEMA = EVENT_SCHEMA
MAX_BYTES = 512
SKEW = 300_000
NOW = 1_700_000_000_000
TS = NOW - 60_000
VALIDATOR = EventValidator(SCHEMA, max_event_bytes=MAX_BYTES, max_future_skew_ms=SKEW)


def payload(**changes) -> dict:
    """A valid minimal event; a value of ``...`` removes the key."""
    base = {"schema_version": 1, "event_id": "e-1", "event_type": "click", "ts": TS, "user_id": "u-1"}
    for key, value in changes.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def check(raw: bytes | dict, record_ts: int = TS, now: int = NOW):
    if isinstance(raw, dict):
        raw = orjson.dumps(raw)
    return VALIDATOR.validate(raw, record_ts, now)


def rejection(result) -> tuple:
    assert isinstance(result, Rejection), result
    return result.reason, result.path


# --- valid events ---------------------------------------------------------------------------

def test_valid_event_with_user_id_and_every_optional_field() -> None:
    event = check(payload(
        event_type="product_view", session_id="s-1", item_id="i-1", category_id="c-1",
        page="/p/1", referrer="https://example.com/", target="buy-button", scroll_depth=0.5,
        dwell_ms=1_200, quantity=2, price=9.99, user_agent="Mozilla/5.0", source="app",
        anonymous_id="anon-1",
    ))
    assert event == Event(
        event_id="e-1", event_type="product_view", ts=TS, user_id="u-1", item_id="i-1",
        category_id="c-1", scroll_depth=0.5, dwell_ms=1_200, user_agent="Mozilla/5.0",
        session_id="s-1", anonymous_id="anon-1", revenue=2 * 9.99, referrer="https://example.com/",
    )


def test_valid_event_with_only_an_anonymous_id_is_keyed_by_it() -> None:
    event = check(payload(user_id=..., anonymous_id="anon-7"))
    assert event == Event(event_id="e-1", event_type="click", ts=TS, user_id="anon-7", anonymous_id="anon-7")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_contract_event_type_is_accepted(event_type: str) -> None:
    required = {"exposure": {"experiment": "x", "variant": "a"}, "impression": {"items": ["i-1", "i-2"]}}
    assert check(payload(event_type=event_type, **required.get(event_type, {}))).event_type == event_type


def test_an_impression_carries_the_items_shown_and_needs_them() -> None:
    assert check(payload(event_type="impression", items=["i-1", "i-2"])).items == ("i-1", "i-2")
    assert check(payload(event_type="click", items=["i-1"])).items is None  # ignored on other types
    for items in (..., [], ["i"] * 101, [""], ["i" * 129], "i-1"):
        rejection = check(payload(event_type="impression", items=items))
        assert isinstance(rejection, Rejection) and rejection.reason == Reason.SCHEMA_VIOLATION, items


def test_boundary_values_are_accepted() -> None:
    # scroll_depth 0 and 1 inclusive, dwell 0, ts 0, ts exactly at the future skew limit
    assert check(payload(scroll_depth=0)).scroll_depth == 0
    assert check(payload(scroll_depth=1)).scroll_depth == 1
    assert check(payload(dwell_ms=0)).dwell_ms == 0
    assert check(payload(ts=0), record_ts=0).ts == 0
    assert check(payload(ts=NOW + SKEW), record_ts=NOW + SKEW).ts == NOW + SKEW


def test_record_of_exactly_the_size_limit_is_accepted() -> None:
    raw = orjson.dumps(payload())
    padded = raw + b" " * (MAX_BYTES - len(raw))
    assert len(padded) == MAX_BYTES
    assert isinstance(check(padded), Event)


def test_integral_json_numbers_become_python_ints() -> None:
    """``1700000000000.0`` is a valid JSON Schema integer; the Event is typed ``ts: int`` and
    the session id is built from the start time as text, so the event must carry an int (or
    be rejected): otherwise the same event gives ``u|1000.0`` instead of ``u|1000``."""
    raw = b'{"schema_version":1,"event_id":"e-1","event_type":"click","ts":1000.0,"user_id":"u",' \
          b'"dwell_ms":5.0}'
    result = VALIDATOR.validate(raw, 1_000, NOW)
    if isinstance(result, Event):
        assert type(result.ts) is int, f"ts is {result.ts!r}"
        assert type(result.dwell_ms) is int, f"dwell_ms is {result.dwell_ms!r}"
    else:
        assert result.reason is Reason.SCHEMA_VIOLATION


# --- size, encoding, syntax ----------------------------------------------------------------

def test_too_large() -> None:
    raw = orjson.dumps(payload())
    padded = raw + b" " * (MAX_BYTES + 1 - len(raw))
    result = check(padded)
    assert rejection(result) == (Reason.TOO_LARGE, None)
    assert result.detail == f"{MAX_BYTES + 1} bytes > limit {MAX_BYTES}"


def test_size_is_checked_before_anything_else() -> None:
    assert check(b"\xff" * (MAX_BYTES + 1)).reason is Reason.TOO_LARGE


def test_not_utf8_names_the_byte_offset() -> None:
    result = check(b'{"a":"\xff"}')      # { " a " : " are bytes 0-5; 0xff is byte 6
    assert rejection(result) == (Reason.NOT_UTF8, None)
    assert result.detail == "invalid UTF-8 at byte 6"


def test_utf8_encoded_surrogate_is_not_utf8() -> None:
    assert check(b'{"a":"\xed\xa0\x80"}').reason is Reason.NOT_UTF8


@pytest.mark.parametrize("raw", [b"", b"{", b'{"event_id": }', b"nope", b'{"a":1}{"b":2}', b"NaN"])
def test_not_json(raw: bytes) -> None:
    assert rejection(check(raw)) == (Reason.NOT_JSON, None)


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_a_schema_violation_at_the_root(raw: bytes) -> None:
    result = check(raw)
    assert rejection(result) == (Reason.SCHEMA_VIOLATION, "$")
    assert result.detail == "event must be a JSON object"


# --- identity and type ------------------------------------------------------------------------

@pytest.mark.parametrize("identity", [
    {"user_id": ...},                                   # absent
    {"user_id": None},                                  # null
    {"user_id": ""},                                    # empty string
    {"user_id": None, "anonymous_id": None},
    {"user_id": "", "anonymous_id": ""},
    {"user_id": ..., "anonymous_id": ""},
])
def test_missing_identity(identity: dict) -> None:
    result = check(payload(**identity))
    assert rejection(result) == (Reason.MISSING_IDENTITY, None)
    assert result.detail == "neither user_id nor anonymous_id is set"


def test_missing_identity_is_reported_before_other_problems() -> None:
    assert check(payload(user_id=..., event_type="hover", ts="x")).reason is Reason.MISSING_IDENTITY


def test_unknown_event_type() -> None:
    result = check(payload(event_type="hover"))
    assert rejection(result) == (Reason.UNKNOWN_EVENT_TYPE, "$.event_type")
    assert result.detail == "unknown event_type 'hover'"


def test_non_string_event_type_is_a_schema_violation() -> None:
    assert rejection(check(payload(event_type=3))) == (Reason.SCHEMA_VIOLATION, "$.event_type")


# --- schema ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "path"), [
    ({"ts": str(TS)}, "$.ts"),                      # string ts
    ({"ts": -1}, "$.ts"),
    ({"ts": 1.5}, "$.ts"),
    ({"ts": True}, "$.ts"),
    ({"ts": ...}, "$"),                              # required
    ({"event_id": ...}, "$"),
    ({"event_id": ""}, "$.event_id"),
    ({"event_id": "x" * 129}, "$.event_id"),
    ({"schema_version": 2}, "$.schema_version"),
    ({"schema_version": True}, "$.schema_version"),
    ({"scroll_depth": 1.5}, "$.scroll_depth"),       # out of range
    ({"scroll_depth": -0.1}, "$.scroll_depth"),
    ({"scroll_depth": "0.5"}, "$.scroll_depth"),
    ({"dwell_ms": -1}, "$.dwell_ms"),
    ({"quantity": 0}, "$.quantity"),
    ({"price": -0.01}, "$.price"),
    ({"item_id": ""}, "$.item_id"),
    ({"user_id": 42}, "$.user_id"),
    ({"user_id": "", "anonymous_id": "anon"}, "$.user_id"),   # identity ok, user_id still invalid
    ({"user_id": None, "anonymous_id": "anon"}, "$.user_id"),
    ({"extra_field": 1}, "$"),                       # additionalProperties: false
    ({"target": "t" * 257}, "$.target"),
])
def test_schema_violation_names_the_json_path(changes: dict, path: str) -> None:
    result = check(payload(**changes))
    assert rejection(result) == (Reason.SCHEMA_VIOLATION, path)
    assert result.detail  # fastjsonschema's message, non-empty


def test_additional_property_detail_names_the_property() -> None:
    result = check(payload(campaign="x"))
    assert rejection(result) == (Reason.SCHEMA_VIOLATION, "$")
    assert "campaign" in result.detail


# --- time -----------------------------------------------------------------------------------

def test_ts_in_future_beyond_skew() -> None:
    ts = NOW + SKEW + 1
    result = check(payload(ts=ts), record_ts=ts)
    assert rejection(result) == (Reason.TS_IN_FUTURE, "$.ts")
    assert result.detail == f"ts {ts} is {SKEW + 1} ms ahead of now"


def test_timestamp_mismatch_with_the_record_timestamp() -> None:
    result = check(payload(ts=TS), record_ts=TS + 1)
    assert rejection(result) == (Reason.TIMESTAMP_MISMATCH, "$.ts")
    assert result.detail == f"ts {TS} differs from the Kafka record timestamp {TS + 1}"


def test_future_check_comes_before_the_record_timestamp_check() -> None:
    assert check(payload(ts=NOW + SKEW + 1), record_ts=TS).reason is Reason.TS_IN_FUTURE


MAX_AGE = 86_400_000
AGED = EventValidator(SCHEMA, max_event_bytes=MAX_BYTES, max_future_skew_ms=SKEW, max_event_age_ms=MAX_AGE)


def test_ts_too_old_beyond_the_max_age() -> None:
    ts = NOW - MAX_AGE - 1
    result = AGED.validate(orjson.dumps(payload(ts=ts)), ts, NOW)
    assert rejection(result) == (Reason.TS_TOO_OLD, "$.ts")
    assert result.detail == f"ts {ts} is {MAX_AGE + 1} ms before now (limit {MAX_AGE} ms)"
    assert AGED.validate(orjson.dumps(payload(ts=NOW - MAX_AGE)), NOW - MAX_AGE, NOW).ts == NOW - MAX_AGE
    # the age check comes before the record timestamp check; without a max age, old is fine
    assert AGED.validate(orjson.dumps(payload(ts=0)), TS, NOW).reason is Reason.TS_TOO_OLD
    assert check(payload(ts=0), record_ts=0).ts == 0


# --- dead letters (core.dead_letter) -----------------------------------------------------------

def test_dead_letter_of_a_utf8_payload() -> None:
    raw = '{"event_type":"hover","user_id":"jörg"}'.encode()
    reject = Rejection(Reason.UNKNOWN_EVENT_TYPE, "unknown event_type 'hover'", "$.event_type")
    letter = DeadLetter.from_wire(dead_letter(raw, reject, "events", 3, 42, TS, NOW).to_wire())
    assert letter.value == raw
    assert letter.headers() == {
        "dlq.reason": b"unknown_event_type",
        "dlq.detail": b"unknown event_type 'hover'",
        "dlq.path": b"$.event_type",
        "dlq.topic": b"events", "dlq.partition": b"3", "dlq.offset": b"42", "dlq.timestamp": str(TS).encode(),
        "dlq.rejected_at": str(NOW).encode(),
    }
    assert letter.as_json() == {
        "reason": "unknown_event_type",
        "detail": "unknown event_type 'hover'",
        "path": "$.event_type",
        "source": {"topic": "events", "partition": 3, "offset": 42, "timestamp": TS},
        "rejected_at": NOW,
        "payload_encoding": "utf-8",
        "payload": '{"event_type":"hover","user_id":"jörg"}',
    }


def test_dead_letter_of_a_non_utf8_payload_keeps_the_original_bytes() -> None:
    raw = b'{"a":"\xff\xfe"}\x00\x80'
    result = check(raw)
    letter = DeadLetter.from_wire(dead_letter(raw, result, "events", 0, 7, TS, NOW).to_wire())
    assert letter.value == raw
    assert letter.reason == "not_utf8"
    assert letter.detail == "invalid UTF-8 at byte 6"
    assert letter.path is None and "dlq.path" not in letter.headers()
    assert (letter.topic, letter.partition, letter.offset, letter.timestamp) == ("events", 0, 7, TS)
    assert letter.rejected_at == NOW
    view = letter.as_json()
    assert view["payload_encoding"] == "base64"
    assert base64.b64decode(view["payload"]) == raw


def test_dead_letter_of_a_control_record_has_no_source_position() -> None:
    letter = control_dead_letter("invalid_rules", "bad", "rules", b"version: x\n", NOW, running_rules_version="v1")
    assert DeadLetter.from_headers(letter.value, letter.headers().items()) == letter
    assert letter.value == b"version: x\n"
    assert letter.headers()["dlq.running_rules_version"] == b"v1"
    assert (letter.partition, letter.offset, letter.timestamp) == (None, None, None)


# --- never raises ---------------------------------------------------------------------------

def assert_event_or_rejection(result) -> None:
    if isinstance(result, Rejection):
        assert isinstance(result.reason, Reason)
        assert isinstance(result.detail, str)
    else:
        assert isinstance(result, Event)
        assert isinstance(result.user_id, str) and result.user_id != ""
        assert result.event_type in EVENT_TYPES


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=700), record_ts=st.integers(-2**63, 2**63 - 1),
       now=st.integers(0, 2**62))
def test_arbitrary_bytes_never_raise(raw: bytes, record_ts: int, now: int) -> None:
    assert_event_or_rejection(VALIDATOR.validate(raw, record_ts, now))


JSON_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=12,
)
FIELDS = ["schema_version", "event_id", "event_type", "ts", "user_id", "anonymous_id", "session_id",
          "item_id", "category_id", "page", "referrer", "target", "scroll_depth", "dwell_ms",
          "quantity", "price", "user_agent", "source"]
FIELD_CHOICES = {
    "schema_version": [1, 1.0, 2, True, "1"],
    "event_type": [*EVENT_TYPES, "hover", "", 1],
    "ts": [TS, TS + 1, 0, -1, NOW + SKEW + 1, float(TS), str(TS)],
    "user_id": ["u", "", None, 0],
    "anonymous_id": ["a", "", None],
    "scroll_depth": [0, 0.5, 1, 1.5, -1, "x"],
    "dwell_ms": [0, 10, -1, 1.0, 2.5],
}
FIELD_VALUES = {key: st.sampled_from(values) for key, values in FIELD_CHOICES.items()}


@st.composite
def json_objects(draw) -> dict:
    """Mostly-valid events with a few fields replaced or added, and arbitrary JSON objects."""
    if draw(st.booleans()):
        return draw(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), JSON_VALUES,
                                    max_size=8))
    obj = payload()
    targeted = st.sampled_from(list(FIELD_VALUES))
    keys = st.one_of(targeted, targeted, targeted, st.sampled_from(FIELDS + ["bogus"]))
    for key in draw(st.lists(keys, max_size=3)):
        strategy = FIELD_VALUES.get(key, JSON_VALUES)
        if draw(st.integers(0, 4)) == 0:
            obj.pop(key, None)
        else:
            obj[key] = draw(strategy)
    return obj


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=json_objects() | JSON_VALUES, record_ts=st.sampled_from([TS, 0, -1]))
def test_arbitrary_json_never_raises(obj, record_ts: int) -> None:
    raw = json.dumps(obj).encode()
    assert_event_or_rejection(VALIDATOR.validate(raw, record_ts, NOW))
    assert_event_or_rejection(AGED.validate(raw, record_ts, NOW))


def test_mutation_tables_reach_every_reason_after_parsing() -> None:
    """Guard for the property test above: single-field mutations from its tables already
    produce every outcome that needs a parsed object, so its inputs are not all trivial."""
    seen = set()
    for key, values in FIELD_CHOICES.items():
        for value in values:
            for record_ts in (TS, 0):
                for validator in (VALIDATOR, AGED):
                    result = validator.validate(json.dumps(payload(**{key: value})).encode(), record_ts, NOW)
                    seen.add(result.reason if isinstance(result, Rejection) else "event")
    assert seen == {"event", Reason.MISSING_IDENTITY, Reason.UNKNOWN_EVENT_TYPE,
                    Reason.SCHEMA_VIOLATION, Reason.TS_IN_FUTURE, Reason.TS_TOO_OLD, Reason.TIMESTAMP_MISMATCH}
