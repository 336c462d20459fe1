"""Online learning with River, as plain Python: explicit state and event time in, explicit outputs out.

- ``propensity``: P(the current session ends in a purchase), one learned example per session.
- ``clusters``: a behavioural cluster id per user at session close, with readable centroids.
- ``interests``: per-user category affinity with exponential decay, and the cold-start fallback.
- ``trending``: population-level trending categories over the last hour of event time.
- ``shared``: the shared (non-per-user) models as one picklable object, and snapshot files.

Per-user state (``LabelState``, ``Interests``) belongs in keyed state; ``SharedModels`` is the
one object the operator holds for everything shared.

May import: the rest of ``core`` and River; nothing outside ``core`` (``core``'s contract).
"""
