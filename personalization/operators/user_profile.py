"""The keyed user operator: a thin adapter from Flink state, timers and outputs onto core.user.

Two inputs: the events keyed by user (and the ``Stitch``/``HandOver`` records of identity
stitching, see ``core.identity``), and a broadcast control stream of ``(kind, payload)``:
``("rules", <rules file text>)`` (hot rules updates, kept in broadcast state) and
``("clock", <ms>)`` (the latest record time the parse tasks have read, rounded up to the
second: at the end of a bounded input it tells every task how far event time got, whatever
its parallelism, see ``core.user``).

The keyed input carries the events and the erasure requests (``core.privacy.ErasureRequest``,
keyed by the same user id, and a ``ForgetLink`` per anonymous id that linked to an erased user,
both passed on by the identity resolver). Consent decides, per event, whether it is profiled at all; an
erasure replaces the user's keyed state by a ``Suppressed`` marker, drops the user's held-back
Redis write, deletes the user's Redis keys, tells the trainer, and confirms on the audit topic.
Timers of a user who is not profiled (erased, or consent revoked) do nothing when they fire.

One output of ``(kind, json)`` pairs, routed to the Kafka topics by ``RouteOutputs``: PyFlink
2.2 (thread mode) does not route side outputs yielded by ``on_timer`` of a keyed broadcast
function, and sessions and segment changes are emitted from timers.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import orjson
from pyflink.datastream import (KeyedBroadcastProcessFunction, ProcessFunction, RuntimeContext,
                                TimeDomain)

from personalization.config.settings import Settings
from personalization.core.dead_letter import DeadLetter, output_limit, oversized_output
from personalization.core.events import Event
from personalization.core.identity import Erasure, ForgetLink, HandOver, Stitch
from personalization.core.learning.feed import EraseRecord, encode
from personalization.core.privacy import (CONTROL_ACTIONS, DENIED, GRANTED, OPT_IN, OPT_OUT, Admission,
                                          ConsentRules, ControlRequest, ErasureRequest, Suppressed, audit_record,
                                          control_audit_record)
from personalization.core.rules import RuleSet, RulesError
from personalization.core.user import Outcome, Result, StateCaps, UserState
from personalization.operators.counters import COUNTS_PUSH_MS, BatchedCounters
from personalization.operators.gc_pauses import bound_gc_pauses
from personalization.operators.outputs import DLQ, SIDE_OUTPUTS, Output, output_topics
from personalization.udfs.validation import control_dead_letter
from personalization.serving.erasure import erase_user
from personalization.serving.redis_store import (OUTPUT_TOO_LARGE, REDIS_WRITE_REFUSED, ProfileWriter, WriteBehind,
                                                 check_connection, connect, predictions_key, profile_key,
                                                 retry_while_down)
from personalization.state.descriptors import (CONTROL_STATE, USER_BIG_PARTS, USER_CATEGORIES, user_held_changes,
                                               user_seen_ids, user_state)
from personalization.state.user_store import UserStateStore
from personalization.wiring import user_logic

log = logging.getLogger(__name__)

RULES, CLOCK = "rules", "clock"
SESSIONS_EMITTED, PROFILE_WRITES, SEGMENT_CHANGES_COUNTED = "sessions_emitted", "profile_writes", "segment_changes"
OUTCOME_COUNTERS = {outcome: f"events_{outcome.value}" for outcome in Outcome}  # named once, not per event
RULES_TOPIC_SOURCE = "rules topic"


class UserProfiles(KeyedBroadcastProcessFunction):
    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self._settings = settings
        self._start_rules = rules  # pickles as its text

    def open(self, runtime_context: RuntimeContext) -> None:
        bound_gc_pauses(self._settings.flink.python_gc_full_every)  # the live-state cache is most of the objects
        self._logic = user_logic(self._settings, self._start_rules)
        self._restored = False
        self._clock: int | None = None
        ttl = self._settings.profile.state_ttl
        self._state = UserStateStore(runtime_context.get_state(user_state(ttl)),
                                     runtime_context.get_list_state(user_seen_ids(ttl)),
                                     runtime_context.get_list_state(user_held_changes(ttl)),
                                     runtime_context.get_map_state(USER_BIG_PARTS),
                                     runtime_context.get_map_state(USER_CATEGORIES),
                                     self._settings.flink.state_cache_size, ttl)
        cfg = self._settings.redis
        self._client = client = connect(cfg)
        check_connection(client, cfg)
        self._consent = ConsentRules(self._settings.privacy.consent_default)
        self._route_refused = self._settings.privacy.without_consent == "route"
        self._writer = ProfileWriter(client, cfg.key_prefix, cfg.profile_ttl, cfg.retry_backoff_max,
                                     self._settings.rules.stream_maxlen, cfg.max_value_bytes)
        # Rendered with the logic of the moment: a rules update flushes first (process_broadcast_element).
        self._writes = WriteBehind(self._writer, cfg.batch_size if cfg.batch_delay else 1,
                                   render=lambda state: self._logic.profile(state))
        self._flush_timers: set[tuple[str, int]] = set()  # (user, time) set by this process
        metrics = runtime_context.get_metrics_group().add_group("personalization")
        # The per-event counters, pushed to Flink by a processing-time timer (_push_counts_soon).
        self._counts = BatchedCounters(metrics, [*OUTCOME_COUNTERS.values(), SESSIONS_EMITTED, PROFILE_WRITES,
                                                 SEGMENT_CHANGES_COUNTED])
        self._push_timer: tuple[str, int] | None = None  # (user, time) of the timer that pushes them
        self._rules_applied = metrics.counter("rules_applied")
        self._rules_rejected = metrics.counter("rules_rejected")
        self._revocations = metrics.counter("consent_revocations")
        self._erasures = metrics.counter("erasures")
        self._controls = {action: metrics.counter(f"user_controls_{action}") for action in CONTROL_ACTIONS}
        self._stitched = metrics.counter("identity_stitches")
        self._merged = metrics.counter("identity_events_merged")
        self._processing_errors = metrics.counter("processing_errors")
        self._writes_refused = {REDIS_WRITE_REFUSED: metrics.counter("redis_writes_refused"),
                                OUTPUT_TOO_LARGE: metrics.counter("profiles_too_large")}
        self._errors_logged: set[type] = set()
        self._dropped = {cap.name: metrics.counter(f"state_dropped_{cap.name}") for cap in dataclasses.fields(StateCaps)}
        self._dropped_anonymous_ids = metrics.counter("state_dropped_anonymous_ids")

    def process_element(self, value: Event | Stitch | HandOver | Erasure,
                        ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        self._restore(ctx)
        user = ctx.get_current_key()  # once per step: each call is a call into the JVM
        yield from self._isolated(self._process(value, user, ctx), user, ctx, lambda: _failed_record(value))

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        self._restore(ctx)
        user = ctx.get_current_key()
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if self._push_timer == (user, timestamp):
                self._push_timer = None
                self._counts.push()
                if (user, timestamp) not in self._flush_timers:  # not also a flush timer (Flink keeps one)
                    return
            self._flush_due(timestamp, user, ctx)
            yield from self._refused_writes()
            return
        yield from self._isolated(self._advance(user, ctx), user, ctx, lambda: {"timer": timestamp})

    def _isolated(self, step, user: str, ctx, failed_record):
        """A step's outputs, all of them; or, if it raised, none of them and a dead letter
        (reason ``processing_error``, the record the step took as its value): one record or
        timer the logic cannot take must not stop the job. The user's state is what was last
        written: the cache forgets the object the step had half changed. Then the dead letters
        of writes Redis refused."""
        try:
            outputs = list(step)
        except Exception as err:  # noqa: BLE001 - whatever it is, it is this record's alone
            self._state.forget(user)
            if self._writes.is_pending(user):  # held as the half-changed object: hold the stored one
                stored = self._state.value(user)
                if isinstance(stored, UserState):
                    self._writes.put(user, stored, stored.unwritten_changes)
                else:
                    self._writes.discard(user)
            self._processing_errors.inc()
            first = type(err) not in self._errors_logged
            self._errors_logged.add(type(err))
            log.error("user %r: a step failed and went to the DLQ (processing_error): %s: %s", user,
                      type(err).__name__, err, exc_info=first)
            record = orjson.dumps({"user_id": user, **failed_record()})
            outputs = [(Output.DLQ, DeadLetter(record, "processing_error", f"{type(err).__name__}: {err}",
                                        self._settings.kafka.topics.events, int(time.time() * 1000)).to_wire())]
        yield from outputs
        yield from self._refused_writes()
        if self._counts.pending and self._push_timer is None:
            self._push_counts_soon(user, ctx)

    def _refused_writes(self):
        """Writes not carried out for a reason of their own: Redis refused them (e.g. ``WRONGTYPE``,
        reason ``redis_write_refused``, with the profile and changes) or the profile is above
        ``redis.max_value_bytes`` (``output_too_large``, summarized). Not retried; each to the DLQ
        (topic ``redis``) and counted by reason."""
        for (profile, _), refusal in self._writes.take_refused():
            self._writes_refused[refusal.reason].inc()
            log.error("user %r: profile not written (%s): %s", profile["user_id"], refusal.reason, refusal.detail)
            yield Output.DLQ, DeadLetter(refusal.value, refusal.reason, refusal.detail, "redis",
                                  int(time.time() * 1000)).to_wire()

    def _process(self, value: Event | Stitch | HandOver | Erasure, user: str, ctx):
        if isinstance(value, (ErasureRequest, ForgetLink)):
            yield from self._erase(value, user)
            return
        if isinstance(value, ControlRequest):
            yield from self._control(value, user, ctx)
            return
        if not isinstance(value, Event):
            yield from self._stitch(value, user, ctx)
            return
        event = value
        admission = self._consent.admit(self._state.value(user), event, self._logic.new_state)
        if admission.revoked:
            self._revocations.inc()
        if admission.state is None:
            yield from self._refuse(user, event, admission)
            return
        state = admission.state
        watermark = ctx.timer_service().current_watermark()
        result = self._logic.on_event(state, event, watermark)
        result.state_changed = result.state_changed or admission.changed
        self._counts.inc(OUTCOME_COUNTERS[result.outcome])
        if result.outcome is Outcome.LATE:
            yield Output.LATE, orjson.dumps({
                "reason": "beyond_allowed_lateness",
                "lateness_ms": result.lateness_ms,
                "watermark": watermark,
                "event": _event_record(event),
            }).decode()
        yield from self._carry_out(state, result, user, ctx)

    def _stitch(self, record: Stitch | HandOver, key: str, ctx):
        """Identity stitching (``core.identity``): merge an anonymous id's events into this user's
        profile, or hand this anonymous profile over (its segments left, state dropped, Redis
        profile replaced by an alias to the user)."""
        state = self._state.value(key)
        if isinstance(record, Stitch):
            # Only into a profile being profiled (consent as recorded, else the default); else
            # nothing of the anonymous id joins it (its own profile is deleted all the same).
            state = self._consent.profiled(state if state is not None else self._logic.new_state(key))
            if state is None:
                return
            result, unlisted = self._logic.merge(state, record.anonymous_id, record.events,
                                                 ctx.timer_service().current_watermark(),
                                                 self._settings.identity.max_anonymous_ids)
            self._stitched.inc()
            self._merged.inc(len(record.events))
            if unlisted:  # beyond identity.max_anonymous_ids
                self._dropped_anonymous_ids.inc(len(unlisted))
                self._writer.drop_aliases(unlisted)
            yield from self._carry_out(state, result, key, ctx)
            return
        if isinstance(state, UserState):
            yield from self._carry_out(state, self._logic.hand_over(state, record.user_id), key, ctx)
        if state is not None:
            self._state.clear(key)
        if self._writes.is_pending(key):  # its last profile and changes (segments left) first, then the alias
            self._writes.flush()
        self._writer.hand_over(key, record.user_id)

    def _advance(self, user: str, ctx):
        """Event time passed a user's timer: sessions close, held events reach the rules."""
        state = self._consent.profiled(self._state.value(user))
        if state is None:  # no state, erased, or consent revoked: nothing more happens to the user
            return
        final = None if self._clock is None else self._clock - self._settings.time.out_of_orderness
        result = self._logic.on_timer(state, ctx.timer_service().current_watermark(), final)
        yield from self._carry_out(state, result, user, ctx)

    def process_broadcast_element(self, value, ctx: KeyedBroadcastProcessFunction.Context):
        self._restore(ctx)
        kind, payload = value
        control = ctx.get_broadcast_state(CONTROL_STATE)
        if kind == CLOCK:
            if self._clock is None or int(payload) > self._clock:
                self._clock = int(payload)
                control.put(CLOCK, payload)
            return
        try:
            logic = self._logic.with_rules(RuleSet(payload, RULES_TOPIC_SOURCE))
        except RulesError as err:
            self._rules_rejected.inc()
            log.warning("rules update rejected, the running rules (version %r) stay: %s",
                        self._logic.rules.version, err)
            yield Output.DLQ, control_dead_letter("invalid_rules", str(err), self._settings.kafka.topics.rules,
                                           payload.encode("utf-8"),
                                           int(time.time() * 1000),
                                           running_rules_version=self._logic.rules.version).to_wire()
            return
        self._writes.flush()  # held profiles are rendered by the rules that decided them
        self._logic = logic
        control.put(RULES, payload)
        self._rules_applied.inc()
        log.info("rules version %r applied", self._logic.rules.version)

    def _restore(self, ctx) -> None:
        """After a (re)start, adopt the rules and clock kept in broadcast state (once)."""
        if self._restored:
            return
        self._restored = True
        control = ctx.get_broadcast_state(CONTROL_STATE)
        if control.contains(RULES):
            try:
                self._logic = self._logic.with_rules(RuleSet(control.get(RULES), RULES_TOPIC_SOURCE))
            except RulesError as err:  # e.g. the restored rules read a window the config dropped
                log.error("the rules kept in the savepoint no longer fit the config (%s); running the "
                          "start-up rules (version %r) instead", err, self._logic.rules.version)
        if control.contains(CLOCK):
            self._clock = int(control.get(CLOCK))

    def _refuse(self, user: str, event: Event, admission: Admission):
        """An event not profiled for want of consent: counted, its consent statement recorded,
        and routed when ``privacy.without_consent`` is ``route``."""
        self._counts.inc(OUTCOME_COUNTERS[Outcome.NO_CONSENT])
        if admission.changed:
            self._state.update(user, admission.keep)
        if self._route_refused:
            yield Output.NO_CONSENT, orjson.dumps({"reason": admission.reason, "event": _event_record(event)}).decode()

    def _erase(self, erasure: Erasure, user: str):
        """Right to be forgotten: the keyed state becomes a marker (``user_state``; the seen ids of
        ``user_seen_ids``, the held events of ``user_held_changes``, the parts of ``USER_BIG_PARTS``
        and the categories of ``USER_CATEGORIES`` are cleared with it, and the cache holds the
        marker too), the held-back write is dropped, every Redis key of the user is deleted, the
        trainer forgets the user, and the audit topic confirms. The marker is in the next
        checkpoint, and the Redis deletes are idempotent: a restore from an earlier checkpoint
        re-reads the request and erases again. A ``ForgetLink`` (this key is an anonymous id that
        linked to the erased user) is carried out alike but confirms nothing: the user's own erasure
        deletes the Redis keys of the anonymous ids it lists, and confirms."""
        request = erasure.request if isinstance(erasure, ForgetLink) else erasure
        stored = self._state.value(user)
        erased_at = int(time.time() * 1000)
        self._writes.discard(user)
        self._state.update(user, Suppressed(request.request_id, erased_at))
        exposed = tuple(stored.experiments) if isinstance(stored, UserState) else ()
        deleted = sum(erase_user(self._client, self._settings.redis.key_prefix, who,
                                 self._settings.redis.retry_backoff_max, exposed)
                      for who in (user, *(stored.anonymous_ids if isinstance(stored, UserState) else ())))
        if self._logic.learning is not None:
            yield Output.LEARNING, encode(EraseRecord(user))
        if isinstance(erasure, ForgetLink):
            return
        self._erasures.inc()
        log.info("erasure request %r carried out: %d Redis keys/entries removed", request.request_id, deleted)
        yield Output.AUDIT, orjson.dumps(audit_record(request, erased_at, isinstance(stored, UserState), deleted)).decode()

    def _control(self, request: ControlRequest, user: str, ctx):
        """A user's control over their personalization (README "User controls").

        ``reset`` and ``opt_out``: the user leaves every segment (cause ``user.reset`` /
        ``user.opt_out``: audiences and webhooks see the exits), a fresh state replaces the old
        one (consent, stitched ids, seen event ids and the version and change numbering kept,
        ``UserLogic.reset``), the trainer forgets the user, and the predictions are deleted.
        After a reset the fresh profile is written; after an opt-out the exits are written at
        once and then the profile is deleted, consent is recorded as denied (later events are
        not profiled, as after a revocation) until an ``opt_in`` or an event states a grant.
        ``opt_in`` records consent granted (a fresh profile after an erasure or a denial)."""
        stored = self._state.value(user)
        self._controls[request.action].inc()
        cleared = isinstance(stored, UserState)
        if request.action == OPT_IN:
            state = stored if isinstance(stored, UserState) else self._logic.new_state(user)
            state.consent = GRANTED
            self._state.update(user, state)
        elif isinstance(stored, UserState):
            fresh, result = self._logic.reset(stored, f"user.{request.action}")
            if request.action == OPT_OUT:
                fresh.consent = DENIED
            yield from self._carry_out(fresh, result, user, ctx)
            prefix = self._settings.redis.key_prefix
            doomed = [predictions_key(prefix, user)]
            if request.action == OPT_OUT:  # the exits go out first, then the profile goes
                self._writes.flush()
                doomed.append(profile_key(prefix, user))
            retry_while_down(lambda: self._client.delete(*doomed), self._settings.redis.retry_backoff_max)
            if self._logic.learning is not None:
                yield Output.LEARNING, encode(EraseRecord(user))
        elif request.action == OPT_OUT:  # no profile: consent denied is all there is to keep
            self._state.update(user, Suppressed())
        log.info("user control %r (%s) carried out", request.request_id, request.action)
        yield Output.AUDIT, orjson.dumps(control_audit_record(request, int(time.time() * 1000), cleared)).decode()

    def _carry_out(self, state, result: Result, user: str, ctx):
        for kind, n in result.dropped.items():
            self._dropped[kind].inc(n)
        records = [change.as_record() for change in result.changes]
        if result.profile_changed:
            # The changes go out with the batch; until then they are in state (re-sent after a restore).
            state.unwritten_changes = self._writes.unwritten(user, state.unwritten_changes) + records
            self._state.update(user, state, result.categories_counted)
            if self._writes.put(user, state, state.unwritten_changes):
                self._flush_within_delay(user, ctx)
            self._counts.inc(PROFILE_WRITES)
        elif result.state_changed or result.learning:  # learning records were built from this state:
            self._state.update(user, state, result.categories_counted)  # keep it, or they would be built again
        else:
            self._state.forget(user)
        for record in result.learning:
            yield Output.LEARNING, encode(record)
        for summary in result.sessions:
            self._counts.inc(SESSIONS_EMITTED)
            yield Output.SESSIONS, orjson.dumps(summary.as_record()).decode()
        for record in records:
            self._counts.inc(SEGMENT_CHANGES_COUNTED)
            yield Output.SEGMENT_CHANGES, orjson.dumps(record).decode()
        if result.next_timer is not None:
            ctx.timer_service().register_event_time_timer(result.next_timer)

    def _flush_within_delay(self, user: str, ctx) -> None:
        """A processing-time timer for a user's newly held-back write, due ``batch_delay`` later.

        Why a timer and not a clock check: timers are checkpointed. A checkpoint taken while
        writes are held back (thread mode gives no hook before the barrier to flush them) still
        holds each of those users' timers; after a restore they fire and the write is re-derived
        from the restored state (``_flush_due``). So a write covered by a completed checkpoint
        is either in Redis already or re-done after the restore, by the compare-and-set.
        """
        due = int(time.time() * 1000) + self._settings.redis.batch_delay  # no JVM call per event
        self._flush_timers.add((user, due))
        ctx.timer_service().register_processing_time_timer(due)

    def _push_counts_soon(self, user: str, ctx) -> None:
        """A processing-time timer that pushes the counters, ``COUNTS_PUSH_MS`` from now (one at a
        time, on the key of the step that counted first)."""
        due = int(time.time() * 1000) + COUNTS_PUSH_MS
        self._push_timer = (user, due)
        ctx.timer_service().register_processing_time_timer(due)

    def _flush_due(self, timestamp: int, user: str, ctx) -> None:
        if (user, timestamp) in self._flush_timers:
            self._flush_timers.discard((user, timestamp))
            if self._writes.is_pending(user):
                self._writes.flush()
            return
        # Set before a restore: the write it guarded may have been lost with the old buffer. Not
        # for a user no longer profiled (an opt-out deleted the profile: it must stay deleted).
        state = self._consent.profiled(self._state.value(user))
        if state is not None and self._writes.put(user, state, state.unwritten_changes):
            self._flush_within_delay(user, ctx)

    def close(self) -> None:
        # At the end of a bounded input processing-time timers no longer fire: send the rest.
        # Nothing can be emitted any more: a refusal here is logged and counted only.
        if hasattr(self, "_writes"):
            self._writes.flush()
            self._counts.push()
            for (profile, _), refusal in self._writes.take_refused():
                self._writes_refused[refusal.reason].inc()
                log.error("user %r: the last profile write not written (%s, at close, not in the DLQ): %s",
                          profile["user_id"], refusal.reason, refusal.detail)


class RouteOutputs(ProcessFunction):
    """``(kind, json)`` -> the side output of that kind (one per Kafka topic), and the learning
    records, most of the records, on the main output: the trainer's key-by chains onto it in
    the same Python call, where a side output is one call into the JVM per record. A record too
    large for its Kafka topic goes to the DLQ instead (``output_too_large``, counted)."""

    def __init__(self, settings: Settings) -> None:
        self._topics = output_topics(settings)
        self._limit = output_limit(settings.kafka.max_message_bytes)

    def open(self, runtime_context: RuntimeContext) -> None:
        self._too_large = runtime_context.get_metrics_group().add_group("personalization").counter(
            "outputs_too_large")

    def process_element(self, value, ctx: ProcessFunction.Context):
        kind, record = value
        if kind == Output.LEARNING:
            yield record
            return
        letter = None if kind == Output.DLQ else oversized_output(record, self._topics[kind], self._limit,
                                                            int(time.time() * 1000))
        if letter is not None:
            self._too_large.inc()
            log.error("an output for %r not written (output_too_large): %s", letter.topic, letter.detail)
            yield DLQ, letter.to_wire()
        else:
            yield SIDE_OUTPUTS[kind], record


def _failed_record(value) -> dict:
    """What a dead letter of a failed step carries: the event as the job had it, or the kind of
    keyed record (a stitch, a hand-over, an erasure)."""
    return {"event": _event_record(value)} if isinstance(value, Event) else {"record": type(value).__name__}


def _event_record(event: Event) -> dict:
    return {name: getattr(event, name) for name in event.__slots__ if getattr(event, name) is not None}
