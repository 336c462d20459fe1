"""The recommender as two keyed halves, so that the job scales out with no parallelism-1 task:

- the **user side** (keyed by user, ``UserSide``) keeps each user's recent items, purchases and
  consent, and turns one interaction into co-view updates (``CoView``, one per neighbour row to
  change, keyed by the row's item) followed by one ``Request`` for the user's top-N, keyed by the
  interacted item;
- the **item side** (keyed by item, ``ItemRow``) keeps the item's co-occurrence neighbours (the
  same decayed, bounded counts as ``cooccurrence.ItemKNN``) and answers the request from the row it
  owns: the item's neighbours (source ``co-view``) blended with the user's recent items (source
  ``recent``) by weighted reciprocal rank, then the usual selection (current and purchased items
  excluded, at most ``max_per_category`` per category, the user's frequency-capped items last).

- the **trending side** (keyed by context: the interacted item's category, else ``GLOBAL``, ``Trend``)
  counts every interaction (``Interaction``) in the event-time window of ``core.learning.trending``
  and fills the places an answer left (``Fill``: a cold-start user, an item nobody co-viewed yet)
  with what trends in that context (source ``trending``). It handles its messages only once the
  watermark has passed them, in event-time order (``release``), so a fill sees exactly the
  interactions up to its own time, whatever the order in which the item tasks sent them.

Because the request follows its own co-view updates through the same keyed channel, the answer
is a pure function of the ordered input: a replay after a restore recomputes the same top-N, and
the user's request number (``version``) makes the Redis write a compare-and-set.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from personalization.core.events import IMPRESSION, Event
from personalization.core.identity import ForgetLink
from personalization.core.evolvable import field_default, positional
from personalization.core.learning.trending import Trending
from personalization.core.privacy import DENIED, GRANTED, OPT_IN, RESET, ControlRequest, ErasureRequest
from personalization.core.recommend.config import RecoConfig
from personalization.core.recommend.cooccurrence import decayed
from personalization.core.recommend.selection import Exposure, select
from personalization.core.recommend.wide import WideInteraction, WideLists, lists_of, shard_of, wide_contexts

MODEL = "coview-knn"          # the model named in a user's recommendations (with the row's update count)
CO_VIEW, RECENT, TRENDING = "co-view", "recent", "trending"
GLOBAL = "*"                  # the trending context of interactions with an item of no known category
RELEASE_STEP_MS = 1_000       # the trending side handles what the watermark passed per second of event time


class CoView(NamedTuple):
    """Add ``amount`` (at event time ``ts``) to ``other`` in ``item``'s neighbour row."""

    item: str
    other: str
    other_category: str | None
    amount: float
    ts: int


class Request(NamedTuple):
    """Recompute ``user``'s top-N at their interaction with ``item`` (the ``version``-th request)."""

    item: str
    category: str | None
    user: str
    version: int
    ts: int
    recent: tuple[tuple[str, str | None], ...]   # (item, category), newest first, ``item`` not among them
    purchased: tuple[str, ...]
    demoted: tuple[str, ...] = ()                # frequency-capped as of ``ts``: placed after all others
    contexts: tuple[str, ...] = ()               # beyond the category, where trending fills from (``core.recommend.wide``)


class Recommendations(NamedTuple):
    """One user's top-N as written to Redis."""

    user: str
    version: int
    items: list[dict[str, str]]      # [{"item": ..., "source": "co-view" | "recent" | "trending", "context": ...}]
    model_version: str               # MODEL and the count of updates of the row it was read from
    item: str                        # the interaction it answers
    at: int                          # its event time


class Interaction(NamedTuple):
    """One interaction with ``item`` at ``ts``: counted in the trending items of ``context``."""

    context: str
    item: str
    ts: int


class Fill(NamedTuple):
    """An answer with places left: up to ``room`` items trending in ``context`` (the category) as
    of its time are appended, then in each of ``contexts`` (``core.recommend.wide``), none of
    ``exclude`` (the answer's items, the current and purchased ones), at most ``max_per_category``
    per category with the answer's own (``taken``: category -> items), ``demoted`` ones last."""

    context: str
    reco: Recommendations
    room: int
    exclude: tuple[str, ...]
    demoted: tuple[str, ...]
    contexts: tuple[str, ...] = ()
    taken: tuple[tuple[str, int], ...] = ()

    @property
    def ts(self) -> int:
        return self.reco.at


@positional
@dataclass(slots=True)
class UserHistory:
    """Per-user keyed state: bounded by ``history_length`` items, ``max_purchased`` purchases and
    ``cap_max_items`` capped items."""

    recent: OrderedDict[str, tuple[int, str | None]] = field(default_factory=OrderedDict)  # item -> (ts, category)
    purchased: OrderedDict[str, None] = field(default_factory=OrderedDict)
    consent: str | None = None
    requests: int = 0
    exposure: Exposure | None = None  # impressions without a click (frequency capping)


@dataclass(slots=True)
class ItemRow:
    """Per-item keyed state: neighbour -> [count at ts, ts, category], at most twice ``knn_neighbours``."""

    category: str | None = None
    neighbours: dict[str, list[Any]] = field(default_factory=dict)
    updates: int = 0
    # user -> this item's newest answer to them not yet known written to Redis (held back for a
    # batch): a restore re-sends them. Emptied when the item's flush timer fires.
    unwritten: dict[str, Recommendations] = field(default_factory=dict)


def _restore_row(row: ItemRow, state: list[Any] | tuple[None, dict[str, Any]]) -> None:
    """Unpickle either form a slots dataclass pickles to (a list of the field values, or
    ``(None, slots)`` on Python versions without the dataclass's own ``__getstate__``); a row
    pickled before ``unwritten`` existed gets it empty."""
    known = fields(ItemRow)
    values = state[1] if isinstance(state, tuple) else dict(zip((f.name for f in known), state))
    for f in known:
        object.__setattr__(row, f.name, values[f.name] if f.name in values else field_default(ItemRow, f))


# Set after the class: a slots dataclass defines its own __setstate__ (see core.events).
ItemRow.__setstate__ = _restore_row  # type: ignore[attr-defined]  # as Event.__setstate__ in core.events


def user_step(history: UserHistory, config: RecoConfig, consent_default: str, event: Event,
              device_class: str | None = None) -> list[CoView | Request]:
    """One event of the user: what the item side must do, in order (co-views, then the request).
    An impression only counts its items towards frequency capping; any event on an item (a click,
    a view) clears that item's count. ``device_class``: of the event's user agent, when known."""
    if event.consent is not None:
        history.consent = event.consent
    if (history.consent or consent_default) != GRANTED:
        return []
    item, category, kind, ts = event.item_id, event.category_id, event.event_type, event.ts
    if kind == IMPRESSION:
        if history.exposure is None:
            history.exposure = Exposure(config.cap_impressions, config.cap_duration_ms, config.cap_max_items)
        history.exposure.impression(event.items or (), ts)
        return []
    if item is not None and history.exposure is not None:
        history.exposure.click(item)
    weight = config.event_weights.get(kind, 0.0)
    if item is None or weight <= 0:
        return []
    out: list[CoView | Request] = []
    for distance, (other, (other_ts, other_category)) in enumerate(reversed(history.recent.items()), start=1):
        if ts - other_ts > config.session_gap_ms:
            break
        if other != item:
            out.append(CoView(item, other, other_category, weight / distance, ts))
            out.append(CoView(other, item, category, weight / distance, ts))
    history.recent.pop(item, None)
    history.recent[item] = (ts, category)
    while len(history.recent) > config.history_length:
        history.recent.popitem(last=False)
    if kind == "purchase" and config.max_purchased:
        history.purchased.pop(item, None)
        history.purchased[item] = None
        while len(history.purchased) > config.max_purchased:
            history.purchased.popitem(last=False)
    history.requests += 1
    recent = tuple((other, cat) for other, (_, cat) in reversed(history.recent.items()) if other != item)
    demoted = history.exposure.demoted_at(ts) if history.exposure is not None else ()
    out.append(Request(item, category, event.user_id, history.requests, ts, recent, tuple(history.purchased), demoted,
                       wide_contexts(event.referrer, device_class)))
    return out


def user_control(history: UserHistory, request: ErasureRequest | ForgetLink | ControlRequest) -> int | None:
    """A user's erasure or control request on the user side (``core.privacy``; a ``ForgetLink`` is the
    erasure reaching an anonymous id that linked to the erased user): an erasure or an opt-out forgets the user's items, purchases and impressions and records consent denied, so no
    later event is used until a grant; a reset forgets them and keeps consent; an opt-in records
    the grant. The request count stays, so later answers are numbered above every earlier one.

    Returns the version below which no answer may be written any more (every answer already on its
    way to Redis has a version at most this: the writer's tombstone, ``RecommendationWriter.erase``),
    or None when nothing is to be removed (an opt-in)."""
    if isinstance(request, ControlRequest) and request.action == OPT_IN:
        history.consent = GRANTED
        return None
    keep = history.consent if isinstance(request, ControlRequest) and request.action == RESET else DENIED
    history.recent, history.purchased, history.exposure = OrderedDict(), OrderedDict(), None
    history.consent = keep
    return history.requests


def learn(row: ItemRow, update: CoView, config: RecoConfig) -> None:
    """Count one co-view in the row; prune to the strongest ``knn_neighbours`` at twice that many."""
    entry = row.neighbours.get(update.other)
    if entry is None:
        row.neighbours[update.other] = [update.amount, update.ts, update.other_category]
    else:
        entry[0] = decayed(entry[0], entry[1], update.ts, config.knn_half_life_ms) + update.amount
        entry[1] = max(entry[1], update.ts)
        entry[2] = update.other_category or entry[2]
    row.updates += 1
    if len(row.neighbours) > 2 * config.knn_neighbours:
        kept = ranked_neighbours(row, update.ts, config)[: config.knn_neighbours]
        row.neighbours = {other: row.neighbours[other] for other in kept}


def ranked_neighbours(row: ItemRow, now: int, config: RecoConfig) -> list[str]:
    """The row's neighbours, strongest first as of ``now`` (ties by id: deterministic)."""
    scores = {other: decayed(c, t, now, config.knn_half_life_ms) for other, (c, t, _) in row.neighbours.items()}
    return sorted(scores, key=lambda other: (-scores[other], other))


def answer(row: ItemRow, request: Request, config: RecoConfig) -> Recommendations | Fill:
    """The user's top-N from the row of the item they just touched and their recent items; a
    ``Fill`` for the trending side when places are left that trending may take."""
    if request.category is not None:
        row.category = request.category
    weights, offset = config.blend_weights, config.blend_rank_offset
    candidates = {CO_VIEW: (ranked_neighbours(row, request.ts, config), weights.get("knn", 0.0)),
                  RECENT: ([item for item, _ in request.recent], weights.get("recent", 0.0))}
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for source, (ranked, weight) in candidates.items():
        if weight <= 0:
            continue
        for rank, item in enumerate(ranked):
            share = weight / (offset + rank)
            scores[item] = scores.get(item, 0.0) + share
            if share > best.get(item, (0.0, ""))[0]:
                best[item] = (share, source)
    blended = sorted(scores, key=lambda item: (-scores[item], item))
    categories = {other: entry[2] for other, entry in row.neighbours.items()}
    categories.update((item, cat) for item, cat in request.recent if cat is not None)
    exclude = {request.item, *(request.purchased if config.exclude_purchased else ())}
    chosen = select(blended, config.top_n, exclude=exclude, category_of=categories.get,
                    max_per_category=config.max_per_category, demoted=frozenset(request.demoted).__contains__)
    reco = Recommendations(request.user, request.version,
                           [{"item": item, "source": best[item][1]} for item in chosen],
                           f"{MODEL}@{row.updates}", request.item, request.ts)
    room = config.top_n - len(chosen)
    taken: dict[str, int] = {}
    for item in chosen:
        category = categories.get(item)
        if category is not None:
            taken[category] = taken.get(category, 0) + 1
    # Only an answer the item's category could still add to waits for the watermark (a fill): one whose
    # category is full is written at once, as it is, so that most answers stay fresh.
    category_full = bool(config.max_per_category and request.category is not None
                         and taken.get(request.category, 0) >= config.max_per_category)
    if room <= 0 or category_full or weights.get("trending", 0.0) <= 0:
        return reco
    return Fill(request.category or GLOBAL, reco, room, tuple(exclude.union(chosen)), request.demoted,
                request.contexts, tuple(sorted(taken.items())))


def interaction(request: Request) -> Interaction:
    """What the trending side counts of a request in its category."""
    return Interaction(request.category or GLOBAL, request.item, request.ts)


def wide_interaction(request: Request, shards: int) -> WideInteraction:
    """What a part of the wide trending side counts of a request (``core.recommend.wide``)."""
    return WideInteraction(shard_of(request.item, shards), request.item, request.category, request.ts,
                           request.contexts)


def new_trend(config: RecoConfig) -> Trending:
    """One context's trending items (the trending side's keyed state)."""
    return Trending(config.trending_window_ms, config.trending_bucket_ms, config.trending_max_items)


def release(trend: Trending, due: list[Interaction | Fill], config: RecoConfig,
            wide: WideLists | None = None) -> list[Recommendations]:
    """Messages the watermark has passed, in event-time order (at equal times interactions first,
    then by item or user: the order they arrived in does not matter); the filled answers."""
    filled = []
    for message in sorted(due, key=_release_order):
        if isinstance(message, Interaction):
            trend.add(message.item, message.ts)
        else:
            filled.append(fill(trend, message, config.max_per_category, wide))
    return filled


def fill(trend: Trending, message: Fill, max_per_category: int, wide: WideLists | None = None) -> Recommendations:
    """The answer with up to ``room`` trending items added (source ``trending``, and the context
    each came from): the category's first, then each wider context's as of the last bucket end
    before the answer; capped items of either kind after all others."""
    demoted = frozenset(message.demoted)
    depth = message.room + len(message.exclude) + len(demoted)
    category = None if message.context == GLOBAL else message.context
    candidates: dict[str, tuple[str, str | None]] = {}  # item -> (context, category), first context wins
    for item, _ in trend.top(depth):
        candidates.setdefault(item, (f"category:{message.context}", category))
    for context in message.contexts:
        for item, item_category in wide.ranked(context, message.ts, depth) if wide is not None else ():
            candidates.setdefault(item, (context, item_category))
    extra = select(candidates, message.room, exclude=frozenset(message.exclude),
                   category_of=lambda item: candidates[item][1], max_per_category=max_per_category,
                   demoted=demoted.__contains__, taken=dict(message.taken))
    items = [*message.reco.items,
             *({"item": item, "source": TRENDING, "context": candidates[item][0]} for item in extra)]
    return message.reco._replace(items=sorted(items, key=lambda entry: entry["item"] in demoted))


def _release_order(message: Interaction | Fill) -> tuple[int, int, str]:
    if isinstance(message, Interaction):
        return message.ts, 0, message.item
    return message.ts, 1, message.reco.user


class InOrder:
    """The three sides in one process, in the input's order, the trending side's messages released
    when asked: what the job computes on one partition whose events are in time order (the tests'
    plain-Python reference)."""

    def __init__(self, config: RecoConfig, consent_default: str,
                 device_of: Callable[[str | None], str | None] = lambda user_agent: None) -> None:
        """``device_of``: the device class of a user agent, as the job's enrichment gives it."""
        self.config, self.consent_default, self.device_of = config, consent_default, device_of
        self.users: dict[str, UserHistory] = defaultdict(UserHistory)
        self.rows: dict[str, ItemRow] = defaultdict(ItemRow)
        self.waiting: dict[str, list[Interaction | Fill]] = defaultdict(list)
        self.wide: list[WideInteraction] = []

    def feed(self, events: Iterable[Event]) -> list[Recommendations]:
        """The complete answers; those with places left wait for ``release_all``."""
        answers = []
        for event in events:
            for message in user_step(self.users[event.user_id], self.config, self.consent_default, event,
                                     self.device_of(event.user_agent)):
                if isinstance(message, CoView):
                    learn(self.rows[message.item], message, self.config)
                    continue
                reco = answer(self.rows[message.item], message, self.config)
                self.waiting[message.category or GLOBAL].append(interaction(message))
                self.wide.append(wide_interaction(message, self.config.trending_shards))
                if isinstance(reco, Fill):
                    self.waiting[reco.context].append(reco)
                else:
                    answers.append(reco)
        return answers

    def release_all(self) -> list[Recommendations]:
        """Every waiting message released (the end of input): the filled answers."""
        wide = lists_of(self.wide, self.config)
        filled = [reco for messages in self.waiting.values()
                  for reco in release(new_trend(self.config), messages, self.config, wide)]
        self.waiting.clear()
        self.wide.clear()
        return filled
