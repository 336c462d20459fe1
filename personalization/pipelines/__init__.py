"""Job assembly and entry points: the job graph (``job``), ``pz run`` / ``pz config`` and
``flink run --python personalization/pipelines/main.py`` (``main``), job control the PyFlink
client lacks (``control``), and the embedded interpreter's start-up (``embedded/``).

May import every layer below it (``operators``, ``serving``, ``state``, ``topics``, ``udfs``,
``config``, ``core``); imported by ``tools`` (the demo runs the job) and the ``pz`` command.
"""
