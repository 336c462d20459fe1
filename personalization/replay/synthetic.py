"""Seeded synthetic behaviour: the signals the real datasets lack, or a whole stream.

Neither dataset has user agents, scroll depth or (Taobao) dwell time, and a
user's clone may not have the datasets at all. ``augment`` adds those signals to a
real replay; ``generate`` builds a complete stream of funnel-shaped sessions.

Every random draw comes from a ``random.Random`` seeded with a string naming the
seed and the thing drawn for (a user, a source event), so output depends only on
the seed and that thing: a prefix, a subset or a reordering of the input gets the
same synthetic events. Per-user traits (device, engagement) come from a keyed
hash, so they need no memory.

Distributions: dwell is lognormal with a 30 s median and a long tail
(sigma 1, p90 ~ 110 s); scroll depth is Beta(2, 2) for most users and
Beta(5, 1.5), mass near the bottom of the page, for engaged users; about 60 % of
users are on mobile and keep their device for ~90 % of their sessions; categories
and items within a category have Zipf-like popularity.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from typing import Any

from personalization.replay.datasets import EventDict, merge_by_time, user_key

DAY_MS = 24 * 3600 * 1000
DEFAULT_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
# Sessions are separated by more than the job's default 30 min inactivity gap.
MIN_SESSION_GAP_MS = 35 * 60 * 1000
MEAN_EXTRA_SESSION_GAP_MS = 8 * 3600 * 1000
FOLLOW_UP_WINDOW_MS = 10_000

USER_AGENTS: tuple[tuple[str, float], ...] = (
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        0.33,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
        0.27,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        0.22,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        0.10,
    ),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0", 0.08),
)
_UA_CUM_WEIGHTS = tuple(itertools.accumulate(weight for _, weight in USER_AGENTS))

ENGAGED_SHARE = 0.3
DEVICE_LOYALTY = 0.9
CLICK_TARGETS = ("comments", "specification", "image_gallery", "recommendation")
# After an event of this type: (synthetic follow-up type, probability).
FOLLOW_UPS: dict[str, tuple[tuple[str, float], ...]] = {
    "product_view": (("scroll", 0.6), ("click", 0.3)),
    "add_to_cart": (("page_view", 0.5),),
    "purchase": (("page_view", 0.9),),
    "favorite": (("page_view", 0.2),),
}
FOLLOW_UP_PAGES = {"add_to_cart": "/cart", "purchase": "/checkout/confirmation", "favorite": "/favorites"}

CATEGORIES = 40
ITEMS_PER_CATEGORY = 150
SAME_CATEGORY_P = 0.8
NEXT_VIEW_P = 0.65  # views per session are 1 + geometric: mean ~2.9
CART_P = 0.15
PURCHASE_GIVEN_CART_P = 0.3
LANDINGS = ("home", "sale", "category", "search")


def _zipf_cum_weights(n: int, exponent: float) -> tuple[float, ...]:
    return tuple(itertools.accumulate(1 / rank**exponent for rank in range(1, n + 1)))


_CATEGORY_WEIGHTS = _zipf_cum_weights(CATEGORIES, 1.1)
_ITEM_WEIGHTS = _zipf_cum_weights(ITEMS_PER_CATEGORY, 1.0)


def _unit(*parts: object) -> float:
    """A uniform [0, 1) value that is a pure function of ``parts`` (no RNG state)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def user_agent_for(user: str, seed: int) -> str:
    """The user's usual device: stable for a (user, seed), weighted ~60 % mobile."""
    point = _unit(seed, "device", user) * _UA_CUM_WEIGHTS[-1]
    return USER_AGENTS[bisect.bisect_right(_UA_CUM_WEIGHTS, point)][0]


def _is_engaged(user: str, seed: int) -> bool:
    return _unit(seed, "engaged", user) < ENGAGED_SHARE


def dwell_ms(rng: random.Random) -> int:
    """Lognormal time on a page: median 30 s, long tail."""
    return int(rng.lognormvariate(math.log(30_000), 1.0))


def scroll_depth(rng: random.Random, engaged: bool) -> float:
    """Fraction of the page seen; engaged users mostly reach the bottom."""
    alpha, beta = (5.0, 1.5) if engaged else (2.0, 2.0)
    return round(rng.betavariate(alpha, beta), 3)


def _follow_ups(parent: EventDict, id_base: str, rng: random.Random, engaged: bool, window_ms: int) -> list[EventDict]:
    """Synthetic events a user plausibly emits within ``window_ms`` after ``parent``."""
    identity: EventDict = {k: parent[k] for k in ("user_id", "anonymous_id", "session_id", "user_agent") if k in parent}
    product: EventDict = {k: parent[k] for k in ("item_id", "category_id") if k in parent}
    events: list[EventDict] = []
    for event_type, probability in FOLLOW_UPS.get(parent["event_type"], ()):
        if rng.random() >= probability:
            continue
        event: EventDict = {
            "schema_version": 1,
            "event_id": f"{id_base}.{len(events)}",
            "event_type": event_type,
            "ts": parent["ts"] + 1 + int(rng.random() * (window_ms - 1)),
            **identity,
            "source": "synthetic",
        }
        if event_type == "page_view":
            event["page"] = FOLLOW_UP_PAGES[parent["event_type"]]
        elif event_type == "scroll":
            event.update(product, scroll_depth=scroll_depth(rng, engaged))
        else:
            event.update(product, target=rng.choice(CLICK_TARGETS))
        events.append(event)
    return events


def augment(events: Iterable[EventDict], seed: int) -> Iterator[EventDict]:
    """Add user agents, missing dwell and synthetic follow-ups to a real replay.

    Follow-ups lie at most ``FOLLOW_UP_WINDOW_MS`` after their source event and are
    held in a heap until the input passes their time, so sorted input stays sorted.
    """
    pending: list[tuple[int, int, EventDict]] = []
    order = itertools.count()
    for source in events:
        while pending and pending[0][0] <= source["ts"]:
            yield heapq.heappop(pending)[2]
        user = user_key(source)
        rng = random.Random(f"{seed}/augment/{source['event_id']}")
        event = {**source}
        event.setdefault("user_agent", user_agent_for(user, seed))
        if event["event_type"] == "product_view" and "dwell_ms" not in event:
            event["dwell_ms"] = dwell_ms(rng)
        yield event
        engaged = _is_engaged(user, seed)
        for extra in _follow_ups(event, f"syn-{event['event_id']}", rng, engaged, FOLLOW_UP_WINDOW_MS):
            heapq.heappush(pending, (extra["ts"], next(order), extra))
    while pending:
        yield heapq.heappop(pending)[2]


def generate(
    users: int, *, duration_ms: int = DAY_MS, seed: int = 0, start_ms: int = DEFAULT_START_MS
) -> Iterator[EventDict]:
    """A fully synthetic stream, sorted by ``ts``, of ``users`` users' sessions.

    Sessions start within ``[start_ms, start_ms + duration_ms)``; the last ones may
    run a few minutes past the end.
    """
    end_ms = start_ms + duration_ms
    return merge_by_time(*(_user_sessions(f"syn-{n}", seed, start_ms, end_ms) for n in range(users)))


def _user_sessions(user: str, seed: int, start_ms: int, end_ms: int) -> Iterator[EventDict]:
    rng = random.Random(f"{seed}/generate/{user}")
    engaged = _is_engaged(user, seed)
    device = user_agent_for(user, seed)
    t = start_ms + int(rng.expovariate(1 / MEAN_EXTRA_SESSION_GAP_MS))
    for number in itertools.count():
        if t >= end_ms:
            return
        user_agent = device if rng.random() < DEVICE_LOYALTY else _any_user_agent(rng)
        session = _session(rng, engaged, t, user, f"{user}-s{number}", user_agent)
        yield from session
        t = session[-1]["ts"] + MIN_SESSION_GAP_MS + int(rng.expovariate(1 / MEAN_EXTRA_SESSION_GAP_MS))


def _any_user_agent(rng: random.Random) -> str:
    return rng.choices(USER_AGENTS, cum_weights=_UA_CUM_WEIGHTS)[0][0]


def _session(rng: random.Random, engaged: bool, t: int, user: str, session: str, user_agent: str) -> list[EventDict]:
    """Landing page -> product views (with scrolls and clicks) -> maybe cart -> maybe purchase."""
    events: list[EventDict] = []
    numbers = itertools.count()

    def emit(event_type: str, ts: int, **fields: Any) -> EventDict:
        event = {
            "schema_version": 1,
            "event_id": f"{session}-{next(numbers)}",
            "event_type": event_type,
            "ts": ts,
            "user_id": user,
            "session_id": session,
            "user_agent": user_agent,
            "source": "synthetic",
            **fields,
        }
        events.append(event)
        return event

    landing = rng.choice(LANDINGS)
    category = _category(rng)
    emit("page_view", t, page="/" if landing == "home" else f"/{landing}")
    while True:
        t += int(rng.uniform(2_000, 20_000))
        if rng.random() >= SAME_CATEGORY_P:
            category = _category(rng)
        item = f"{category}-i{rng.choices(range(ITEMS_PER_CATEGORY), cum_weights=_ITEM_WEIGHTS)[0]}"
        dwell = dwell_ms(rng)
        view = emit("product_view", t, item_id=item, category_id=category, referrer=landing, dwell_ms=dwell)
        events.extend(_follow_ups(view, view["event_id"], rng, engaged, max(dwell, 2)))
        t += dwell
        if rng.random() >= NEXT_VIEW_P:
            break
    if rng.random() < CART_P:
        t += int(rng.uniform(2_000, 10_000))
        price = item_price(item)
        cart = emit("add_to_cart", t, item_id=item, category_id=category, quantity=1, price=price)
        events.extend(_follow_ups(cart, cart["event_id"], rng, engaged, FOLLOW_UP_WINDOW_MS))
        if rng.random() < PURCHASE_GIVEN_CART_P:
            t += FOLLOW_UP_WINDOW_MS + int(rng.uniform(20_000, 300_000))
            order = emit("purchase", t, item_id=item, category_id=category, quantity=1, price=price)
            events.extend(_follow_ups(order, order["event_id"], rng, engaged, FOLLOW_UP_WINDOW_MS))
    events.sort(key=lambda event: event["ts"])
    return events


def _category(rng: random.Random) -> str:
    return f"syn-c{rng.choices(range(CATEGORIES), cum_weights=_CATEGORY_WEIGHTS)[0]}"


def item_price(item: str) -> float:
    """A stable list price per item (lognormal, median 25)."""
    return round(random.Random(f"price/{item}").lognormvariate(math.log(25), 0.8), 2)
