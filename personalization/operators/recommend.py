"""Thin Flink adapters of ``core.recommend.stream``: the user side keyed by user, the item side
keyed by item, the trending side keyed by category, and the parts of the wider trending contexts
keyed by part (``core.recommend.wide``), all at the job's parallelism; their state one pickled
value per key (and the trending sides' messages waiting for the watermark). The parts' lists
reach every trending task as broadcast state."""

from __future__ import annotations

import time

import orjson
from pyflink.datastream import KeyedBroadcastProcessFunction, KeyedProcessFunction, OutputTag, RuntimeContext, \
    TimeDomain

from personalization.config.settings import Settings
from personalization.core.events import IMPRESSION, Event
from personalization.core.identity import ForgetLink, Routed
from personalization.core.privacy import ControlRequest, ErasureRequest
from personalization.core.recommend.stream import RELEASE_STEP_MS, CoView, Fill, Interaction, ItemRow, \
    Recommendations, Request, UserHistory, answer, interaction, learn, new_trend, release, user_control, user_step, \
    wide_interaction
from personalization.core.recommend.wide import Partial, ShardTrends, WideInteraction, WideLists, advance, release_at
from personalization.serving.reco_store import HeldRecommendations, RecommendationWriter
from personalization.serving.redis_store import check_connection, connect
from personalization.state.cached import CachedValueState
from personalization.state.descriptors import RECO_WIDE_LISTS, reco_item_state, reco_shard_held, reco_shard_state, \
    reco_trend_pending, reco_trend_state, reco_trend_unwritten, reco_user_state
from personalization.wiring import device_class_of

# The item side's interactions for the parts of the wider trending contexts (``core.recommend.wide``).
WIDE = OutputTag("reco-wide")


def for_recommender(routed: Routed) -> bool:
    """What the recommender takes of the identity resolver's output: the events of anonymous ids (on
    the anonymous id's key before its link, on the user's after it), and the erasure reaching an
    anonymous id stitched to an erased user. Stitches and hand-overs are the profile's: the
    recommender keeps each key's history as its events came."""
    return isinstance(routed, (Event, ForgetLink))


class HeldAnswers:
    """Answers held back and written in batches (``redis.batch_size`` users, within
    ``redis.batch_delay``), each also kept in the answering key's checkpointed state until a flush
    is known to have covered it (thread mode gives no hook to flush before a barrier), with a
    processing-time timer: a timer this process set flushes, and the key's list may be emptied; a
    timer restored from a checkpoint (unknown to this process) finds the list as checkpointed and
    sends it again, by the compare-and-set, so an answer covered by a completed checkpoint is in
    Redis or re-sent after a restore."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.redis
        client = connect(cfg)
        check_connection(client, cfg)
        writer = RecommendationWriter(client, cfg.key_prefix, settings.recommendations.ttl, cfg.retry_backoff_max)
        self._held = HeldRecommendations(writer, cfg.batch_size if cfg.batch_delay else 1)
        self._delay = cfg.batch_delay
        self._timers: dict[str, int] = {}  # key -> due time of the flush timer this process set

    def hold(self, key: str, recos: list[Recommendations], ctx) -> None:
        for reco in recos:
            self._held.put(reco)
        if key not in self._timers:
            due = int(time.time() * 1000) + self._delay
            self._timers[key] = due
            ctx.timer_service().register_processing_time_timer(due)

    def on_timer(self, key: str, timestamp: int, unwritten: dict[str, Recommendations], ctx) -> bool:
        """A processing-time timer of ``key`` fired; True when ``unwritten`` is all sent (by this
        flush, an earlier batch, or superseded) and the key's list is to be emptied."""
        if self._timers.get(key) == timestamp:
            del self._timers[key]
            if any(map(self._held.holds, unwritten.values())):
                self._held.flush()
            return bool(unwritten)
        if unwritten:  # restored: the held answers may be lost
            self.hold(key, list(unwritten.values()), ctx)
        return False

    def flush(self) -> None:
        """At the end of a bounded input processing-time timers no longer fire: send the rest."""
        self._held.flush()


class Waiting:
    """Messages held in keyed state until the watermark passes them, by the second of event time
    they are released at: one event-time timer per second that has messages, and a release reads
    and removes only its own. Checkpointed with the timers: a restore releases exactly what was not."""

    def __init__(self, state) -> None:
        self._pending = state

    def hold(self, message: Interaction | Fill, ctx) -> None:
        release_at = -(-message.ts // RELEASE_STEP_MS) * RELEASE_STEP_MS
        waiting = self._pending.get(release_at)
        self._pending.put(release_at, [*waiting, message] if waiting else [message])
        if not waiting:
            ctx.timer_service().register_event_time_timer(release_at)

    def take(self, timestamp: int) -> list:
        """The messages released at ``timestamp`` (none if the timer was for something else)."""
        due = self._pending.get(timestamp)
        if due:
            self._pending.remove(timestamp)
        return due or []


class RecoUsers(KeyedProcessFunction):
    """Events of one user -> co-view updates and a top-N request (``core.recommend.stream.user_step``).
    The user's erasure and control requests (``core.privacy``) clear the user's history here
    (``user_control``) and leave a tombstone of the user's recommendations in Redis, which refuses
    every answer still on its way from the item and trending sides."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._config = settings.recommendations.core()
        self._consent_default = settings.privacy.consent_default

    def open(self, runtime_context: RuntimeContext) -> None:
        self._device_of = device_class_of(self._settings)
        self._state = runtime_context.get_state(reco_user_state(self._config.state_ttl_ms))
        cfg = self._settings.redis
        client = connect(cfg)
        check_connection(client, cfg)
        self._writer = RecommendationWriter(client, cfg.key_prefix, self._settings.recommendations.ttl,
                                            cfg.retry_backoff_max)

    def process_element(self, event: Event | ErasureRequest | ForgetLink | ControlRequest,
                        ctx: KeyedProcessFunction.Context):
        history = self._state.value() or UserHistory()
        if not isinstance(event, Event):
            floor = user_control(history, event)
            if floor is not None:
                self._writer.erase(ctx.get_current_key(), floor)
            self._state.update(history)
            return
        out = user_step(history, self._config, self._consent_default, event, self._device_of(event.user_agent))
        clicked = event.item_id is not None and history.exposure is not None  # may have cleared a count
        if out or clicked or event.consent is not None or event.event_type == IMPRESSION:
            self._state.update(history)
        yield from out


class RecoItems(KeyedProcessFunction):
    """One item's neighbour row: learns co-views, answers requests with the user's top-N, held
    back and written to Redis in batches (``redis.batch_size`` users, within ``redis.batch_delay``);
    sends each request's interaction, and the answers with places left, to the trending side, and
    the interaction to its part of the wider contexts (side output ``WIDE``). Held answers are kept
    in the row (``ItemRow.unwritten``, see ``HeldAnswers``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._config = settings.recommendations.core()

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = runtime_context.get_state(reco_item_state(self._config.state_ttl_ms))
        self._answers = HeldAnswers(self._settings)
        self._trending = self._config.blend_weights.get("trending", 0.0) > 0
        group = runtime_context.get_metrics_group().add_group("personalization")
        self._written = group.counter("recommendations_written")

    def process_element(self, message: CoView | Request, ctx: KeyedProcessFunction.Context):
        row = self._state.value() or ItemRow()
        if isinstance(message, CoView):
            learn(row, message, self._config)
            self._state.update(row)
            return
        reco = answer(row, message, self._config)
        if isinstance(reco, Recommendations):
            row.unwritten[reco.user] = reco
        self._state.update(row)
        if self._trending:
            yield interaction(message)
            yield WIDE, wide_interaction(message, self._config.trending_shards)
        if isinstance(reco, Fill):
            yield reco
        else:
            self._answers.hold(message.item, [reco], ctx)
            self._written.inc()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        row = self._state.value()
        if row is not None and self._answers.on_timer(ctx.get_current_key(), timestamp, row.unwritten, ctx):
            row.unwritten = {}
            self._state.update(row)
        return iter(())

    def close(self) -> None:
        if hasattr(self, "_answers"):
            self._answers.flush()


class RecoShards(KeyedProcessFunction):
    """One part of the wider trending contexts (``core.recommend.wide``): interactions are held in
    a list state (one append each) until the watermark passes the end of their bucket, then
    counted in event-time order; at each bucket end (one event-time timer per part and bucket)
    the part offers its lists, which are broadcast to the trending side."""

    def __init__(self, settings: Settings) -> None:
        self._config = settings.recommendations.core()

    def open(self, runtime_context: RuntimeContext) -> None:
        ttl = self._config.state_ttl_ms
        self._state = runtime_context.get_state(reco_shard_state(ttl))
        self._held = runtime_context.get_list_state(reco_shard_held(ttl))
        self._timers: set[tuple[int, int]] = set()  # (part, bucket end) this process registered

    def process_element(self, message: WideInteraction, ctx: KeyedProcessFunction.Context):
        self._held.add(message)
        timer = (message.shard, release_at(message, self._config))
        if timer not in self._timers:  # a timer restored from a checkpoint may be set again: Flink keeps one
            self._timers.add(timer)
            ctx.timer_service().register_event_time_timer(timer[1])
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        shard = ctx.get_current_key()
        self._timers.discard((shard, timestamp))
        held = list(self._held.get() or ())
        due = [message for message in held if message.ts < timestamp]
        if due:
            self._held.update([message for message in held if message.ts >= timestamp])
        part = self._state.value() or ShardTrends()
        if not due and (part.next_end is None or timestamp < part.next_end):
            return
        waited_for = part.next_end
        yield from advance(part, shard, due, timestamp, self._config)
        if part.next_end is not None and part.next_end != waited_for:
            ctx.timer_service().register_event_time_timer(part.next_end)
        if part.contexts:
            self._state.update(part)
        else:
            self._state.clear()


class RecoTrending(KeyedBroadcastProcessFunction):
    """One category's trending items: interactions and fills wait in keyed state until the
    watermark passes them (``Waiting``), then are handled in event-time order
    (``core.recommend.stream.release``); a fill then takes the lists of the wider contexts the
    parts broadcast (kept in broadcast state, ``RECO_WIDE_LISTS``, and mirrored in a
    ``WideLists``; lists more than two buckets older than the last release are dropped: no waiting
    fill needs them. The release's time stands in for the watermark, which the broadcast side's
    context does not give in thread mode). The filled answers are held back and written in batches like the item
    side's (kept in ``reco-trend-unwritten-v1``, see ``HeldAnswers``). Timers, waiting messages
    and lists are checkpointed: a restore answers exactly what was not."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._config = settings.recommendations.core()

    def open(self, runtime_context: RuntimeContext) -> None:
        ttl = self._config.state_ttl_ms
        self._trend = CachedValueState(runtime_context.get_state(reco_trend_state(ttl)),
                                       self._settings.flink.state_cache_size, ttl)
        self._waiting = Waiting(runtime_context.get_map_state(reco_trend_pending(ttl)))
        self._unwritten = runtime_context.get_state(reco_trend_unwritten(ttl))
        self._answers = HeldAnswers(self._settings)
        self._written = runtime_context.get_metrics_group().add_group("personalization").counter(
            "recommendations_written")
        self._wide: WideLists | None = None  # read from the broadcast state at the first call
        self._released = None  # the time of the last release: the watermark has passed it

    def process_broadcast_element(self, partial: Partial, ctx: KeyedBroadcastProcessFunction.Context):
        lists = ctx.get_broadcast_state(RECO_WIDE_LISTS)
        wide = self._lists(ctx)
        wide.put(partial)
        lists.put(_list_key(partial.context, partial.shard, partial.at), partial)
        if self._released is not None:
            for context, shard, at in wide.drop_before(self._released - 2 * self._config.trending_bucket_ms):
                lists.remove(_list_key(context, shard, at))
        return iter(())

    def process_element(self, message: Interaction | Fill, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        self._waiting.hold(message, ctx)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if self._answers.on_timer(ctx.get_current_key(), timestamp, self._unwritten.value() or {}, ctx):
                self._unwritten.clear()
            return iter(())
        due = self._waiting.take(timestamp)
        if not due:
            return iter(())
        self._released = max(self._released or timestamp, timestamp)
        context = ctx.get_current_key()
        trend = self._trend.value(context) or new_trend(self._config)
        filled = release(trend, due, self._config, self._lists(ctx))
        self._trend.update(context, trend)
        if filled:
            unwritten = self._unwritten.value() or {}
            for reco in filled:
                if reco.user not in unwritten or unwritten[reco.user].version < reco.version:
                    unwritten[reco.user] = reco
            self._unwritten.update(unwritten)
            self._answers.hold(context, filled, ctx)
            self._written.inc(len(filled))
        return iter(())

    def _lists(self, ctx) -> WideLists:
        """The mirror of the broadcast lists, read from the state once per process (after a restore)."""
        if self._wide is None:
            self._wide = WideLists(self._config.trending_bucket_ms)
            for _, partial in ctx.get_broadcast_state(RECO_WIDE_LISTS).items():
                self._wide.put(partial)
        return self._wide

    def close(self) -> None:
        if hasattr(self, "_answers"):
            self._answers.flush()


def _list_key(context: str, shard: int, at: int) -> str:
    return orjson.dumps([context, shard, at]).decode()
