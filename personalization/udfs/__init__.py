"""Per-record functions of the job: parse and validate against the event contract, enrich
(user agent, item catalog), pseudonymize ids, and build the dead letter of a rejection.

May import: ``config`` and ``core``; no Flink (the operators call these). Imported by
``operators``, ``replay`` and ``pipelines``.
"""
