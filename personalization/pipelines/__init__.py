"""Job assembly and the tools around it: the job graph (``job``), ``pz run`` and the embedded
entry point, the demo, topics, the DLQ, rules and model tools, and the REST monitor.

May import every layer below it (``activation``, ``operators``, ``serving``, ``state``,
``replay``, ``udfs``, ``config``, ``core``); imported only by ``personalization.cli``.
"""
