"""Identity stitching: an anonymous id's profile joins its user's profile once an event links them.

Events carry ``user_id``, ``anonymous_id`` or both; an event with both (different) ids is a
**link**. The resolver (``operators.identity``, a keyed operator upstream of the user operator,
keyed by the anonymous id, else the user id) keeps per anonymous id the user it is linked to and,
until the link, the anonymous id's events (``IdentityState``). It routes every event to its
profile key (``Event.user_id``):

- before the link, anonymous events stay on the anonymous id's profile, and are held here;
- at the link, it sends the held events to the user's key as one ``Stitch`` (the user logic
  applies them as if they had carried the user id, see ``UserLogic.merge``), a ``HandOver`` to
  the anonymous key (its state is dropped, its Redis profile replaced by an alias), and the
  link event itself to the user's key; it then forgets the held events;
- after the link, anonymous events (late or not) are re-keyed to the user.

**Exactly once, without a loop**: the merge is a replay of the anonymous id's own events from
the resolver's state, which flows downstream like any event; it needs no record from the
anonymous profile's keyed state (that would need a loop topic back into the user operator). The
resolver's state (linked, held events gone) and the user operator's state (events merged) are
snapshotted by the same aligned checkpoint, whose barrier follows the ``Stitch`` in the channel:
a restore from a checkpoint taken before the link finds neither (the source re-reads the link
event, the stitch happens then), one taken after finds both. Should a ``Stitch`` reach the user
twice anyway, its events are deduplicated by ``event_id`` like any event.

Rules and limits:

- **First link wins.** An anonymous id stays linked to the first user it was linked to; a later
  event linking it to another user (a shared device) is applied to that other user's profile (its
  ``user_id`` is explicit) but moves nothing: ``conflict``.
- **A user may link several anonymous ids** (devices); each one merges once. The profile lists
  them (``anonymous_ids``), at most ``identity.max_anonymous_ids``: beyond that, the oldest is
  dropped from the list and its alias key deleted (its profile was already merged, and its later
  anonymous events still reach the user: the resolver decides per anonymous id, where the user's
  other ids are unknown).
- **At most ``identity.max_anonymous_events`` events are held per anonymous id.** An anonymous id
  with more before its link is not stitched at all (``unstitched``): it keeps a profile of its
  own, and its links only route the linking events to the user. Never a partial merge.
- Events of the anonymous id that were beyond the allowed lateness when they arrived are not held
  (the anonymous profile did not apply them either).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from personalization.core.events import Event
from personalization.core.evolvable import evolvable


@evolvable
@dataclass(slots=True)
class IdentityState:
    """What the resolver keeps per anonymous id."""

    linked_to: str | None = None  # the user this anonymous id is stitched to
    held: list[Event] = field(default_factory=list)  # its events before the link, in arrival order
    overflowed: bool = False  # more than max_anonymous_events before a link: never stitched


@dataclass(frozen=True, slots=True)
class Stitch:
    """To the user's key: merge the anonymous id's events (re-keyed to the user) into the profile."""

    user_id: str
    anonymous_id: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class HandOver:
    """To the anonymous id's key: the profile now lives under ``user_id`` (drop the state, alias the keys)."""

    anonymous_id: str
    user_id: str


Routed = Event | Stitch | HandOver


def profile_key(item) -> str:
    """The user operator's key for a routed record (or an erasure request: its ``user_id``)."""
    return item.anonymous_id if isinstance(item, HandOver) else item.user_id


def resolver_key(event: Event) -> str:
    """The resolver's key: the anonymous id when there is one (its state is per anonymous id)."""
    return event.anonymous_id or event.user_id


class Resolution(str, enum.Enum):
    KNOWN = "known"  # no anonymous id, or the link it is already stitched by
    ANONYMOUS = "anonymous"  # an anonymous id's event before its link
    REKEYED = "rekeyed"  # an anonymous id's event after its link: to the user
    LINKED = "linked"  # the first link: the stitch
    CONFLICT = "conflict"  # a link to another user than the first one
    UNSTITCHED = "unstitched"  # a link of an anonymous id with too many events to be stitched


class Routing(NamedTuple):
    out: list[Routed]
    resolution: Resolution
    changed: bool  # the state must be written


@dataclass(frozen=True, slots=True)
class IdentityRules:
    max_anonymous_events: int
    allowed_lateness_ms: int

    def route(self, state: IdentityState, event: Event, watermark: int) -> Routing:
        anonymous = event.anonymous_id
        if anonymous is None:
            return Routing([event], Resolution.KNOWN, False)
        if event.user_id == anonymous:
            return self._anonymous(state, event, watermark)
        if state.linked_to is not None:
            known = state.linked_to == event.user_id
            return Routing([event], Resolution.KNOWN if known else Resolution.CONFLICT, False)
        if state.overflowed:
            return Routing([event], Resolution.UNSTITCHED, False)
        user = event.user_id
        held = tuple(replace(e, user_id=user) for e in state.held)
        state.linked_to, state.held = user, []
        return Routing([HandOver(anonymous, user), Stitch(user, anonymous, held), event], Resolution.LINKED, True)

    def _anonymous(self, state: IdentityState, event: Event, watermark: int) -> Routing:
        if state.linked_to is not None:
            return Routing([replace(event, user_id=state.linked_to)], Resolution.REKEYED, False)
        if state.overflowed or watermark - event.ts > self.allowed_lateness_ms:
            return Routing([event], Resolution.ANONYMOUS, False)
        if len(state.held) >= self.max_anonymous_events:
            state.overflowed, state.held = True, []
        else:
            state.held.append(event)
        return Routing([event], Resolution.ANONYMOUS, True)


def add_anonymous_id(ids: list[str], anonymous_id: str, limit: int) -> list[str]:
    """Append ``anonymous_id`` to a profile's stitched ids (oldest first); the ids dropped to stay
    within ``limit``, oldest first."""
    if anonymous_id not in ids:
        ids.append(anonymous_id)
    dropped = ids[: max(len(ids) - limit, 0)]
    del ids[: len(dropped)]
    return dropped
