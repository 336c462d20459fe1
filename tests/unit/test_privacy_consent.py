"""Consent and erasure rules (personalization.core.privacy), the trainer forgetting an erased user,
and the consent field of the event contract."""

from __future__ import annotations

import orjson
import pytest

from personalization.config.settings import load_settings
from personalization.core.events import Event
from personalization.core.learning.feed import EraseRecord, EventRecord, SessionRef, encode
from personalization.core.learning.trainer import Trainer, TrainerRules
from personalization.core.privacy import (
    DENIED, ERASED, GRANTED, NOT_GRANTED, ConsentRules, ControlRequest, ErasureRequest, InvalidErasureRequest, Suppressed,
    audit_record, parse_erasure,
)
from personalization.core.sessions import SessionRules
from personalization.core.user import Outcome, UserLogic, UserState
from personalization.udfs.pseudonymize import Pseudonymizer
from personalization.udfs.validation import EventValidator, Rejection

LOGIC = UserLogic(session_rules=SessionRules(gap_ms=1_000, max_length_ms=10_000, allowed_lateness_ms=500),
                  window_sizes=(10_000,), window_buckets=10, dedup_horizon_ms=100_000, top_categories=2)
GRANTING, DENYING = ConsentRules(GRANTED), ConsentRules(DENIED)


def ev(n: int, consent: str | None = None) -> Event:
    return Event(event_id=f"e{n}", event_type="page_view", ts=1_000 * n, user_id="u", consent=consent)


def feed(rules: ConsentRules, events: list[Event], stored=None):
    """Run events through consent then the user logic, as the operator does; returns what is
    stored at the end and the outcome of each event."""
    outcomes = []
    for event in events:
        admission = rules.admit(stored, event, LOGIC.new_state)
        stored = admission.keep
        if admission.state is None:
            outcomes.append((Outcome.NO_CONSENT, admission.reason))
        else:
            outcomes.append(LOGIC.on_event(admission.state, event, watermark=0).outcome)
    return stored, outcomes


def test_without_a_consent_field_the_default_decides():
    stored, outcomes = feed(GRANTING, [ev(1), ev(2)])
    assert outcomes == [Outcome.PROCESSED] * 2 and stored.counts == {"page_view": 2} and stored.consent is None
    stored, outcomes = feed(DENYING, [ev(1), ev(2)])
    assert outcomes == [(Outcome.NO_CONSENT, NOT_GRANTED)] * 2 and stored is None  # nothing kept of them


def test_a_user_whose_first_word_is_a_denial_is_never_profiled_and_only_a_marker_is_kept():
    stored, outcomes = feed(GRANTING, [ev(1, DENIED), ev(2), ev(3)])
    assert outcomes == [(Outcome.NO_CONSENT, DENIED)] * 3
    assert stored == Suppressed()


def test_revocation_stops_profiling_from_that_event_on_and_keeps_the_profile():
    rules = GRANTING
    stored, _ = feed(rules, [ev(1), ev(2)])
    admission = rules.admit(stored, ev(3, DENIED), LOGIC.new_state)
    assert (admission.state, admission.changed, admission.revoked, admission.reason) == (None, True, True, DENIED)
    stored, outcomes = feed(rules, [ev(4), ev(5)], admission.keep)
    assert outcomes == [(Outcome.NO_CONSENT, DENIED)] * 2
    assert stored.counts == {"page_view": 2} and stored.consent == DENIED
    assert rules.profiled(stored) is None  # its timers do nothing


def test_a_grant_after_a_revocation_resumes_on_the_kept_profile():
    stored, outcomes = feed(GRANTING, [ev(1), ev(2, DENIED), ev(3), ev(4, GRANTED), ev(5)])
    assert outcomes == [Outcome.PROCESSED, (Outcome.NO_CONSENT, DENIED), (Outcome.NO_CONSENT, DENIED),
                        Outcome.PROCESSED, Outcome.PROCESSED]
    assert stored.counts == {"page_view": 3} and stored.consent == GRANTED
    assert GRANTING.profiled(stored) is stored


def test_a_repeated_denial_is_not_a_second_revocation():
    stored, _ = feed(GRANTING, [ev(1), ev(2, DENIED)])
    admission = GRANTING.admit(stored, ev(3, DENIED), LOGIC.new_state)
    assert (admission.changed, admission.revoked) == (False, False)


def test_an_explicit_grant_under_a_denying_default_is_remembered():
    stored, outcomes = feed(DENYING, [ev(1), ev(2, GRANTED), ev(3)])
    assert outcomes == [(Outcome.NO_CONSENT, NOT_GRANTED), Outcome.PROCESSED, Outcome.PROCESSED]
    assert stored.consent == GRANTED and DENYING.profiled(stored) is stored


def test_after_an_erasure_only_a_grant_recreates_a_profile_and_it_starts_afresh():
    marker = Suppressed("req-1", 1_700_000_000_000)
    stored, outcomes = feed(GRANTING, [ev(6), ev(7)], marker)
    assert outcomes == [(Outcome.NO_CONSENT, ERASED)] * 2 and stored is marker
    assert GRANTING.profiled(marker) is None
    stored, outcomes = feed(GRANTING, [ev(8, GRANTED), ev(9)], marker)
    assert outcomes == [Outcome.PROCESSED] * 2
    assert isinstance(stored, UserState) and stored.counts == {"page_view": 2} and stored.version == 2
    assert stored.first_seen == 8_000 and stored.consent == GRANTED


def test_a_late_or_duplicate_grant_is_still_recorded():
    admission = GRANTING.admit(Suppressed("r", 1), ev(1, GRANTED), LOGIC.new_state)
    result = LOGIC.on_event(admission.state, ev(1, GRANTED), watermark=10_000)  # beyond allowed lateness
    assert result.outcome is Outcome.LATE and admission.changed  # the operator stores the fresh state


def test_erasure_requests_parse_or_name_the_problem():
    assert parse_erasure('{"user_id": "tb-1", "request_id": "r1", "requested_at": 5}') == \
        ErasureRequest("tb-1", "r1", 5)
    for text, problem in [("nope", "not JSON"), ("[1]", "JSON object"),
                          ('{"request_id": "r", "requested_at": 1}', "user_id"),
                          ('{"user_id": "", "request_id": "r", "requested_at": 1}', "user_id"),
                          ('{"user_id": "u", "request_id": "r", "requested_at": "soon"}', "requested_at"),
                          ('{"user_id": "u", "request_id": "r", "requested_at": true}', "requested_at"),
                          ('{"user_id": "u", "request_id": "r", "requested_at": 1, "x": 1}', "unknown fields")]:
        with pytest.raises(InvalidErasureRequest, match=problem):
            parse_erasure(text)


def test_control_requests_parse_by_action_and_an_unknown_action_is_refused():
    text = '{"user_id": "tb-1", "request_id": "r1", "requested_at": 5, "action": "%s"}'
    assert parse_erasure(text % "erase") == ErasureRequest("tb-1", "r1", 5)
    for action in ("reset", "opt_out", "opt_in"):
        assert parse_erasure(text % action) == ControlRequest("tb-1", "r1", 5, action)
    for action in ("delete", "RESET", ""):
        with pytest.raises(InvalidErasureRequest, match="action must be one of"):
            parse_erasure(text % action)
    with pytest.raises(InvalidErasureRequest, match="action must be one of"):
        parse_erasure('{"user_id": "u", "request_id": "r", "requested_at": 1, "action": 3}')


def test_an_erasure_request_is_pseudonymized_like_the_events(monkeypatch):
    monkeypatch.setenv("PZ_TEST_KEY", "k" * 32)
    pseudonym = Pseudonymizer("PZ_TEST_KEY")
    request = parse_erasure('{"user_id": "tb-1", "request_id": "r1", "requested_at": 5}', pseudonym)
    assert request == ErasureRequest(pseudonym("tb-1"), "r1", 5) and request.user_id.startswith("p_")


def test_a_first_event_under_the_default_stores_nothing_until_the_logic_changes_something():
    admission = GRANTING.admit(None, ev(1), LOGIC.new_state)
    assert admission.state is not None and admission.changed is False  # a late first event keeps no state
    assert GRANTING.admit(None, ev(1, GRANTED), LOGIC.new_state).changed is True  # a stated grant is kept


def test_audit_record_names_the_request():
    record = audit_record(ErasureRequest("u", "r1", 5), 9, True, 4)
    assert record == {"request_id": "r1", "user_id": "u", "requested_at": 5, "erased_at": 9,
                      "state_cleared": True, "redis_keys_deleted": 4}


def test_the_contract_accepts_a_consent_statement_and_refuses_anything_else():
    validator = EventValidator(load_settings().validation.schema_path, 65_536, 300_000)
    base = {"schema_version": 1, "event_id": "e1", "event_type": "page_view", "ts": 1_000, "user_id": "u"}

    def check(**extra):
        return validator.validate(orjson.dumps({**base, **extra}), 1_000, 1_000)

    assert check(consent={"personalization": "denied"}).consent == DENIED
    assert check().consent is None
    for bad in ({"personalization": "maybe"}, {}, {"personalization": "granted", "ads": "granted"}, "granted"):
        rejected = check(consent=bad)
        assert isinstance(rejected, Rejection) and rejected.path.startswith("$.consent")


def _record(user: str, t: int, n: int) -> str:
    return encode(EventRecord(t, user, f"{user}-{n}", SessionRef(f"{user}-s", 0, t), [0.0] * 20, False, "cat", n,
                              [], t))


def test_the_trainer_forgets_an_erased_users_held_records_and_asks_for_their_predictions_deleted():
    trainer = Trainer(TrainerRules(horizon_ms=1_000))
    for n, user in enumerate(["gone", "kept", "gone"]):
        trainer.receive(_record(user, 100 + n, n))
    out = trainer.receive(encode(EraseRecord("gone")))
    assert out.erased == ["gone"] and [key[2] for key, _ in trainer.held] == ["kept"]
    out = trainer.advance(1_000)
    assert set(out.writes) == {"kept"} and "gone" not in trainer.labels
