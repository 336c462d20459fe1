"""Keyed state descriptors: one place for names and types, because they are the savepoint contract.

Renaming a descriptor or changing its type breaks restoring from existing savepoints.
"""

from pyflink.common import Time, Types
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, StateTtlConfig, ValueStateDescriptor


def user_state(ttl_ms: int = 0) -> ValueStateDescriptor:
    """The per-user state (core.user.UserState, or core.privacy.Suppressed) as one value but for a
    busy user's seen ids (``user_seen_ids``), held events (``user_held_changes``), seldom changed
    parts (``USER_BIG_PARTS``) and categories (``USER_CATEGORIES``): msgpack bytes
    (``state.codec``; an earlier release's pickled object until the user's next change). The
    Python state cache keeps the live object between events, so it is encoded when written back,
    not decoded per event.

    ``ttl_ms`` > 0 (``profile.state_ttl``): a user's state expires that long after its last write
    (Flink state TTL, processing time; never served once expired; removed by the backend's
    background cleanup), so users who stopped coming do not stay in state forever."""
    descriptor = ValueStateDescriptor("user-state-v1", Types.PICKLED_BYTE_ARRAY())
    return _expiring(descriptor, ttl_ms) if ttl_ms else descriptor


def user_seen_ids(ttl_ms: int = 0) -> ListStateDescriptor:
    """The event ids a user's state has seen, in arrival order (``state.codec.seen_id_entry``): a
    list apart from ``user_state`` so that a step appends its new id rather than re-encoding every
    id kept (``state.user_store``). Each entry expires ``ttl_ms`` after it was written (> 0)."""
    descriptor = ListStateDescriptor("user-seen-ids-v1", Types.STRING())
    return _expiring(descriptor, ttl_ms) if ttl_ms else descriptor


def user_held_changes(ttl_ms: int = 0) -> ListStateDescriptor:
    """The changes to the events a user holds for sessions (``state.codec.held_change_entry``: an
    event held, a prefix forgotten), in the order made, for a user holding more than
    ``codec.MAX_INLINE_HELD``: a log apart from ``user_state`` so that a step appends its change
    rather than re-encoding every event held (``state.user_store``). Each entry expires ``ttl_ms``
    after it was written (> 0)."""
    descriptor = ListStateDescriptor("user-held-events-v1", Types.STRING())
    return _expiring(descriptor, ttl_ms) if ttl_ms else descriptor


# A busy user's parts of ``user_state`` that change seldom (``state.codec.BIG_PARTS``: the sessions'
# summaries, the open session's aggregates for the rules), msgpack by part name, each written only
# at a step that changed it (``state.user_store``). Not used with a state TTL.
USER_BIG_PARTS = MapStateDescriptor("user-parts-v1", Types.STRING(), Types.PICKLED_BYTE_ARRAY())

# A busy user's categories counted (``UserState.categories`` beyond ``state.codec.MAX_INLINE_ITEMS``):
# category -> count, a step putting the counts it raised (``state.user_store``). Not used with a
# state TTL (an entry's TTL counts from its own write: a category not counted for a while would
# expire before the value).
USER_CATEGORIES = MapStateDescriptor("user-categories-v1", Types.STRING(), Types.LONG())

# The identity resolver's state per anonymous id (core.identity.IdentityState, pickled): the user
# it is linked to, and its events until then.
IDENTITY_STATE = ValueStateDescriptor("identity-state-v1", Types.PICKLED_BYTE_ARRAY())

# The link index's state per user id (core.identity.LinkIndex, pickled): the anonymous ids that
# linked to the user, so that the user's erasure reaches them at the resolver.
LINK_INDEX = ValueStateDescriptor("identity-links-v1", Types.PICKLED_BYTE_ARRAY())

# Broadcast state of the user operator: the rules applied by the last valid update ("rules" ->
# the rules file text) and the latest record time the job has read ("clock" -> ms).
CONTROL_STATE = MapStateDescriptor("control-v1", Types.STRING(), Types.STRING())

# The model trainer (one key, parallelism 1): the trainer's state pickled now and then, and
# the log of operations since (records received, watermarks advanced to), replayed on restore;
# the propensity label bookkeeping per user (core.learning.propensity.LabelState, pickled), as of
# the last snapshot: in a map, so that a snapshot writes only the users that changed.
MODEL_STATE = ValueStateDescriptor("trainer-state-v1", Types.PICKLED_BYTE_ARRAY())
MODEL_LOG = ListStateDescriptor("trainer-log-v1", Types.STRING())
MODEL_LABELS = MapStateDescriptor("trainer-labels-v1", Types.STRING(), Types.PICKLED_BYTE_ARRAY())

# The rate anomaly detector (one key): the trailing per-minute counts of every series
# (core.anomaly.RateHistory, pickled), and the counts of minutes not yet closed, by the
# minute's last millisecond.
RATE_HISTORY = ValueStateDescriptor("rate-history-v1", Types.PICKLED_BYTE_ARRAY())
RATE_MINUTES = MapStateDescriptor("rate-minutes-v1", Types.LONG(), Types.PICKLED_BYTE_ARRAY())

# The recommender (core.recommend.stream): per user, the recent items, purchases and consent
# (UserHistory, pickled); per item, its co-view neighbour row (ItemRow, pickled). Expire after
# ``recommendations.state_ttl`` without a write (longer than the key's ttl: an item's neighbours
# are worth keeping for weeks at a 7-day half-life), so neither grows forever.
def reco_user_state(ttl_ms: int) -> ValueStateDescriptor:
    return _expiring(ValueStateDescriptor("reco-user-v1", Types.PICKLED_BYTE_ARRAY()), ttl_ms)


def reco_item_state(ttl_ms: int) -> ValueStateDescriptor:
    return _expiring(ValueStateDescriptor("reco-item-v1", Types.PICKLED_BYTE_ARRAY()), ttl_ms)


# The trending side, per context (a category, or "*"): its trending items (core.learning.trending.
# Trending, pickled), the interactions and fills the watermark has not passed yet (lists of pickled
# core.recommend.stream.Interaction / Fill by the event time they are released at), and the filled
# answers held back
# for a batch (user -> Recommendations, pickled) until a flush covers them.
def reco_trend_state(ttl_ms: int) -> ValueStateDescriptor:
    return _expiring(ValueStateDescriptor("reco-trend-v1", Types.PICKLED_BYTE_ARRAY()), ttl_ms)


def reco_trend_pending(ttl_ms: int) -> MapStateDescriptor:
    return _expiring(MapStateDescriptor("reco-trend-pending-v1", Types.LONG(), Types.PICKLED_BYTE_ARRAY()), ttl_ms)


def reco_trend_unwritten(ttl_ms: int) -> ValueStateDescriptor:
    return _expiring(ValueStateDescriptor("reco-trend-unwritten-v1", Types.PICKLED_BYTE_ARRAY()), ttl_ms)


def reco_shard_state(ttl_ms: int) -> ValueStateDescriptor:
    """A part of the wider trending contexts (``core.recommend.wide.ShardTrends``), pickled."""
    return _expiring(ValueStateDescriptor("reco-shard-v1", Types.PICKLED_BYTE_ARRAY()), ttl_ms)


def reco_shard_held(ttl_ms: int) -> ListStateDescriptor:
    """A part's interactions waiting for the watermark to pass the end of their bucket."""
    return _expiring(ListStateDescriptor("reco-shard-held-v1", Types.PICKLED_BYTE_ARRAY()), ttl_ms)


# The parts' lists as every trending task keeps them (broadcast state): a JSON ``[context, part,
# bucket end]`` -> ``core.recommend.wide.Partial``.
RECO_WIDE_LISTS = MapStateDescriptor("reco-wide-lists-v1", Types.STRING(), Types.PICKLED_BYTE_ARRAY())


def _expiring(descriptor: ValueStateDescriptor | ListStateDescriptor | MapStateDescriptor,
              ttl_ms: int) -> ValueStateDescriptor | ListStateDescriptor | MapStateDescriptor:
    descriptor.enable_time_to_live(
        StateTtlConfig.new_builder(Time.milliseconds(ttl_ms))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .build())
    return descriptor
