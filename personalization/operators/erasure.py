"""Parse erasure and control requests from the erasure topic; invalid ones go to the DLQ, never
fail the job.

A valid request is keyed like the events (its ``user_id``, pseudonymized the same way when
``privacy.pseudonymize`` is on). An erasure passes the link index and the identity resolver
(``operators.identity``: they forget the id and its stitched anonymous ids) on its way to the
user operator, which carries it out (``operators.user_profile``); a control request (reset,
opt-out, opt-in: nothing for the identity operators to forget) goes straight to the user
operator, on the ``CONTROLS`` side output.
"""

from __future__ import annotations

import time

from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from personalization.config.settings import Settings
from personalization.core.privacy import ControlRequest, InvalidErasureRequest, parse_erasure
from personalization.operators.outputs import DLQ
from personalization.udfs.pseudonymize import Pseudonymizer
from personalization.udfs.validation import control_dead_letter

INVALID_ERASURE_REQUEST = "invalid_erasure_request"  # DLQ reason
CONTROLS = OutputTag("user-controls")  # core.privacy.ControlRequest, pickled


class ParseErasures(ProcessFunction):
    def __init__(self, settings: Settings) -> None:
        self._privacy = settings.privacy
        self._topic = settings.kafka.topics.erasure

    def open(self, runtime_context: RuntimeContext) -> None:
        # The key is read here, on the TaskManager, from its environment: never in the job graph.
        self._pseudonym = Pseudonymizer(self._privacy.pseudonym_key_env) if self._privacy.pseudonymize else None
        metrics = runtime_context.get_metrics_group().add_group("personalization")
        self._rejected = metrics.counter(f"erasures_rejected_{INVALID_ERASURE_REQUEST}")

    def process_element(self, raw: bytes, ctx: ProcessFunction.Context):
        try:
            request = parse_erasure(raw, self._pseudonym)
        except InvalidErasureRequest as err:
            self._rejected.inc()
            yield DLQ, control_dead_letter(INVALID_ERASURE_REQUEST, str(err), self._topic, raw,
                                           int(time.time() * 1000)).to_wire()
            return
        if isinstance(request, ControlRequest):
            yield CONTROLS, request
        else:
            yield request
