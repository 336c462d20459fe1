"""Activation: deliver the job's segment changes to webhooks, in a process of its own.

The Flink job writes ``segment-changes`` and makes no outbound HTTP calls; this service consumes
that topic, signs and posts each change to the endpoints configured for its segment and action,
retries, and dead-letters what still fails (docs/webhooks.md).

May import: ``config`` and ``core``; no Flink. Imported by ``tools`` (the demo runs it) and the ``pz`` command.
"""
