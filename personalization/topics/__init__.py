"""The job's Kafka topics seen from outside the job: create, delete and check them (``admin``),
publish and read single records (``records``). The job's own sources and sinks are Flink
connectors in ``pipelines.job``; this package is for its start-up checks and the tools.

May import: ``config`` and ``core``; no Flink. Imported by ``pipelines``, ``tools``, the bench and the tests.
"""
