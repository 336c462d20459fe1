"""Replay: real datasets and synthetic behaviour as contract-v1 events, into Kafka or files.

May import: ``udfs`` (the item catalog), ``config`` and ``core``; no Flink. Imported by ``tools`` and the ``pz`` command.
"""
