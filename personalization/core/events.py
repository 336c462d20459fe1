"""The validated event as the core sees it: a small immutable record, no JSON, no Flink."""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, fields
from itertools import zip_longest
from typing import Any

# What users do: what counters, windows, sessions, rules and models see.
BEHAVIOUR_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "click",
    "scroll",
    "add_to_cart",
    "favorite",
    "purchase",
)
# The contract's types: behaviour, and what the site reports about the user (not behaviour):
# ``exposure``, the user saw an experiment's variant (core.experiments); ``impression``, the user
# was shown these items (the recommender's frequency capping, core.recommend.stream).
IMPRESSION = "impression"
EVENT_TYPES: tuple[str, ...] = (*BEHAVIOUR_TYPES, "exposure", IMPRESSION)


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    event_type: str
    ts: int
    user_id: str  # the profile key: the user id, else the anonymous id (core.identity may re-key it)
    item_id: str | None = None
    category_id: str | None = None
    scroll_depth: float | None = None
    dwell_ms: int | None = None
    user_agent: str | None = None
    session_id: str | None = None
    consent: str | None = None  # consent.personalization as stated by the event (core.privacy)
    anonymous_id: str | None = None  # as sent; with a different user_id the event links the two (core.identity)
    revenue: float | None = None  # price * quantity (quantity 1 if absent), when the event has a price
    experiment: str | None = None  # exposure: the experiment and the variant shown (core.experiments)
    variant: str | None = None
    items: tuple[str, ...] | None = None  # impression: the items shown
    referrer: str | None = None  # where the user came from, as sent (a URL or a label): cold-start trending

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Event:
        """Build from a contract-validated payload; identity is the user id, else the anonymous id."""
        dwell, price = payload.get("dwell_ms"), payload.get("price")
        return cls(  # JSON Schema calls 1000.0 an integer: make it one, or ids and sums drift
            event_id=payload["event_id"],
            event_type=payload["event_type"],
            ts=int(payload["ts"]),
            user_id=payload.get("user_id") or payload["anonymous_id"],
            item_id=payload.get("item_id"),
            category_id=payload.get("category_id"),
            scroll_depth=payload.get("scroll_depth"),
            dwell_ms=None if dwell is None else int(dwell),
            user_agent=payload.get("user_agent"),
            session_id=payload.get("session_id"),
            consent=(payload.get("consent") or {}).get("personalization"),
            anonymous_id=payload.get("anonymous_id") or None,
            revenue=None if price is None else price * payload.get("quantity", 1),
            experiment=payload.get("experiment"),
            variant=payload.get("variant"),
            items=tuple(payload["items"]) if payload.get("event_type") == IMPRESSION else None,
            referrer=payload.get("referrer") or None,
        )


def _restore(self: Event, state: list[Any]) -> None:
    """Unpickle the field values in order (the form a frozen slots dataclass pickles to); an
    event pickled before the last fields were added (held in a savepoint's identity state) gets
    their defaults. Fields are only ever appended, with defaults."""
    for f, value in zip_longest(fields(self), state, fillvalue=MISSING):
        assert isinstance(f, Field)  # never more values than fields
        object.__setattr__(self, f.name, f.default if value is MISSING else value)


# Set after the class: some Python 3.11 releases' dataclass(frozen=True, slots=True) put their own
# __setstate__ over one defined in the class body (3.11.2 does; 3.11.7 keeps the class's).
Event.__setstate__ = _restore  # type: ignore[attr-defined]  # typeshed's object has no __setstate__ to assign
