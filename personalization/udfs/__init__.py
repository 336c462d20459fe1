"""Per-record functions of the job: parse and validate against the event contract, enrich
(user agent, item catalog), pseudonymize ids, build the dead letter of a rejection, and the key
of every keyed stream (``keys``).

May import: ``config`` and ``core``; no Flink (the operators call these). Imported by
``operators``, ``replay``, ``wiring`` and ``pipelines``.
"""
