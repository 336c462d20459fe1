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

Consent and erasure (``core.privacy``): the resolver records each anonymous id's latest consent
statement and holds only events the user operator profiles (the same ``ConsentRules``, applied
to the same anonymous-only events in the same order); an event that is not profiled (a denial,
say) drops what it held. An erasure request passes the resolver on its way to the user operator,
keyed by the id it names: that id's state becomes a marker (link and held events forgotten,
consent denied until a grant). A user's stitched anonymous ids are reached through the **link
index** (``LinkIndex``), keyed by user id upstream of the resolver: it records every anonymous
id that linked to the user and, at the user's erasure, sends the request on together with one
``ForgetLink`` per anonymous id (then forgets them too). The resolver forgets an anonymous id on
a ``ForgetLink`` unless it is stitched to another user (first link wins), and passes it on so
the user operator erases that anonymous id as well.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from personalization.core.events import Event
from personalization.core.evolvable import evolvable
from personalization.core.privacy import DENIED, ConsentRules, ErasureRequest


@evolvable
@dataclass(slots=True)
class IdentityState:
    """What the resolver keeps per anonymous id."""

    linked_to: str | None = None  # the user this anonymous id is stitched to
    held: list[Event] = field(default_factory=list)  # its events before the link, in arrival order
    overflowed: bool = False  # more than max_anonymous_events before a link: never stitched
    consent: str | None = None  # its latest stated consent (core.privacy); DENIED once erased


@evolvable
@dataclass(slots=True)
class LinkIndex:
    """What the link index keeps per user: the anonymous ids that linked to the user, oldest first."""

    anonymous_ids: list[str] = field(default_factory=list)

    def note(self, event: Event) -> bool:
        """Record the anonymous id of a link; whether it is new."""
        anonymous_id = event.anonymous_id
        if anonymous_id is None or anonymous_id in self.anonymous_ids:
            return False
        self.anonymous_ids.append(anonymous_id)
        return True

    def fan_out(self, request: ErasureRequest) -> list[Erasure]:
        """The user's erasure request, then one ``ForgetLink`` per anonymous id that linked to the user."""
        return [request, *(ForgetLink(anonymous_id, request) for anonymous_id in self.anonymous_ids)]


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


@dataclass(frozen=True, slots=True)
class ForgetLink:
    """The erasure of ``request.user_id`` reaching an anonymous id that linked to that user: the
    resolver forgets the anonymous id, the user operator erases it (no audit record of its own:
    the user's erasure confirms the request)."""

    anonymous_id: str
    request: ErasureRequest


Erasure = ErasureRequest | ForgetLink  # on its way through the resolver to the user operator
Routed = Event | Stitch | HandOver | Erasure


def is_link(event: Event) -> bool:
    """The event carries a user id and a different anonymous id."""
    return event.anonymous_id is not None and event.user_id != event.anonymous_id


class Resolution(str, enum.Enum):
    KNOWN = "known"  # no anonymous id, or the link it is already stitched by
    ANONYMOUS = "anonymous"  # an anonymous id's event before its link
    REKEYED = "rekeyed"  # an anonymous id's event after its link: to the user
    LINKED = "linked"  # the first link: the stitch
    CONFLICT = "conflict"  # a link to another user than the first one
    UNSTITCHED = "unstitched"  # a link of an anonymous id with too many events to be stitched
    NO_CONSENT = "no_consent"  # an anonymous id's event before its link, not profiled: not held
    ERASED = "erased"  # an erasure request, or a ForgetLink: the id's state forgotten
    NOT_STITCHED_TO = "not_stitched_to"  # a ForgetLink of an id stitched to another user: kept


class Routing(NamedTuple):
    out: list[Routed]
    resolution: Resolution
    changed: bool  # the state must be written


@dataclass(frozen=True, slots=True)
class IdentityRules:
    max_anonymous_events: int
    allowed_lateness_ms: int
    consent: ConsentRules  # the user operator's (privacy.consent_default)

    def route(self, state: IdentityState, event: Event, watermark: int) -> Routing:
        anonymous = event.anonymous_id
        if anonymous is None:
            return Routing([event], Resolution.KNOWN, False)
        if not is_link(event):
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
        # Consent as the user operator decides it for this event on the anonymous id's profile.
        changed = event.consent is not None and event.consent != state.consent
        if changed:
            state.consent = event.consent
        if not self.consent.admits(state.consent):  # not profiled: not held, and what was held goes
            changed, state.held = changed or bool(state.held), []
            return Routing([event], Resolution.NO_CONSENT, changed)
        if state.overflowed or watermark - event.ts > self.allowed_lateness_ms:
            return Routing([event], Resolution.ANONYMOUS, changed)
        if len(state.held) >= self.max_anonymous_events:
            state.overflowed, state.held = True, []
        else:
            state.held.append(event)
        return Routing([event], Resolution.ANONYMOUS, True)

    @staticmethod
    def erase(state: IdentityState, erasure: Erasure) -> Routing:
        """An erasure on its way to the user operator: the id's link, held events and consent are
        replaced by a marker (consent denied until a grant, as the user operator's ``Suppressed``),
        unless a ``ForgetLink`` reaches an anonymous id stitched to another user."""
        if isinstance(erasure, ForgetLink) and state.linked_to not in (None, erasure.request.user_id):
            return Routing([], Resolution.NOT_STITCHED_TO, False)
        state.linked_to, state.held, state.overflowed, state.consent = None, [], False, DENIED
        return Routing([erasure], Resolution.ERASED, True)

