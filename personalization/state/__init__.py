"""Flink keyed state: the descriptors (names and types are the savepoint contract) and the read
cache of live objects in front of a pickled ``ValueState``.

May import: ``config``, ``core`` and pyflink. Imported by ``operators`` and ``pipelines``.
"""
