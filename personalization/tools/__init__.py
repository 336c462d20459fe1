"""The operator's tools around the running job, each a ``pz`` command: the demo and its story,
topics, the DLQ (list, replay), rules (check, diff, publish), model snapshots and the learning
and recommendation quality replays, and the Flink REST monitor.

May import every layer below it (``pipelines``, ``activation``, ``serving``, ``replay``,
``topics``, ``config``, ``core``); imported only by the ``pz`` command (``personalization.cli``).
"""
