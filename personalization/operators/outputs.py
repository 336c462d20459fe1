"""What the job's Python operators hand on, by kind: one enum of the kinds, and the side-output
tags that take each kind to its sink (``pipelines.job``).

The user operator emits ``(kind, json)`` pairs (``KIND_AND_JSON``) and the route operator turns
each into its side output (``SIDE_OUTPUTS``), except the learning records, which stay on the
route's main output for the trainer's key-by. Every operator that rejects a record does so on
the one ``DLQ`` tag, as ``core.dead_letter`` wire text.
"""

from __future__ import annotations

from enum import StrEnum

from pyflink.common import Types
from pyflink.datastream import OutputTag

from personalization.config.settings import Settings


class Output(StrEnum):
    SESSIONS = "sessions"
    LATE = "late"
    SEGMENT_CHANGES = "segment-changes"
    DLQ = "dlq"
    NO_CONSENT = "no-consent"   # events not profiled (privacy.without_consent: route)
    AUDIT = "audit"             # erasures and user controls carried out
    LEARNING = "learning"       # records for the model trainer (core.learning.feed)


KIND_AND_JSON = Types.TUPLE([Types.STRING(), Types.STRING()])
DLQ = OutputTag(Output.DLQ.value, Types.STRING())
SIDE_OUTPUTS = {kind: DLQ if kind is Output.DLQ else OutputTag(kind.value, Types.STRING())
                for kind in Output if kind is not Output.LEARNING}


def output_topics(settings: Settings) -> dict[Output, str]:
    """The Kafka topic of each kind the route sends on (the DLQ has a sink of its own)."""
    topics = settings.kafka.topics
    return {Output.SESSIONS: topics.sessions, Output.LATE: topics.late, Output.SEGMENT_CHANGES: topics.segment_changes,
            Output.AUDIT: topics.audit, Output.NO_CONSENT: topics.no_consent}
