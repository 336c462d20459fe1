"""The domain logic in plain Python: events, sessions, rolling windows, per-user state and its
steps, identity, privacy, dead letters, experiments, the rules engine (``rules``), the online
models (``learning``) and the recommenders (``recommend``).

May import: nothing of this package outside ``core``, and no Flink, Kafka, Redis or HTTP library
(pyproject.toml ``[tool.importlinter]``): explicit state and event time in, explicit outputs out,
so the bench, the tests and the adapters call the same functions.
"""
