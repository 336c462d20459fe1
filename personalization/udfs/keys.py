"""The key of every keyed stream of the job: which task, and which keyed state, a record goes to.

One module, so the job's keying is read in one place (the savepoint's keyed state is laid out by
these keys). Why an identity record goes where it does is ``core.identity``'s story; the
trainer and the rate detector take every record on one key, by design (parallelism 1).
"""

from __future__ import annotations

from personalization.core.events import Event
from personalization.core.identity import ForgetLink, HandOver, Routed
from personalization.core.privacy import ErasureRequest
from personalization.core.recommend.stream import CoView, Fill, Interaction, Request
from personalization.core.recommend.wide import WideInteraction

MODEL_KEY = "models"   # the trainer's one key
RATES_KEY = "rates"    # the rate detector's one key


def user_key(item: Routed) -> str:
    """The user operator's key for a routed record: the anonymous id a hand-over or a forgotten
    link is about, else the user id (of an erasure request: the id it names)."""
    return item.anonymous_id if isinstance(item, (HandOver, ForgetLink)) else item.user_id


def resolver_key(item: Event | ErasureRequest | ForgetLink) -> str:
    """The identity resolver's key: the anonymous id when there is one (its state is per anonymous id)."""
    if isinstance(item, Event):
        return item.anonymous_id or item.user_id
    return user_key(item)


def link_index_key(item: Event | ErasureRequest) -> str:
    """The link index's key: the user id (of a link, or named by an erasure request)."""
    return item.user_id


def item_key(message: CoView | Request) -> str:
    """The recommender's item side: co-views and requests go to the item they name."""
    return message.item


def context_key(message: Interaction | Fill) -> str:
    """The recommender's trending side: one key per category (the item's, or ``GLOBAL``)."""
    return message.context


def shard_key(message: WideInteraction) -> int:
    """The recommender's parts of the wider trending contexts: the part that counts the item."""
    return message.shard


def model_key(_: object) -> str:
    """Every learning record goes to the one trainer."""
    return MODEL_KEY


def rates_key(_: object) -> str:
    """Every per-minute count goes to the one rate detector."""
    return RATES_KEY
