"""The Flink operators: thin adapters that map keyed state, timers and outputs onto ``core``.

May import: ``serving`` (the Redis writers), ``state`` (descriptors), ``udfs``, ``config``,
``core`` and pyflink. Imported by ``pipelines`` only.
"""
