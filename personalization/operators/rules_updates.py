"""Rules texts from the rules topic, read as bytes and decoded here: a record that is not UTF-8
goes to the DLQ whole, never fails the job.

Why not a string source: Flink's string schema replaces each invalid byte with U+FFFD (three
bytes in UTF-8), so a megabyte of random bytes became a dead letter twice the DLQ's limit and
the job restarted on it forever. The texts that decode go on, tagged, to the user operator's
broadcast state, which checks them as rules (``operators.user_profile``).
"""

from __future__ import annotations

import time

from pyflink.datastream import ProcessFunction, RuntimeContext

from personalization.operators.outputs import DLQ
from personalization.operators.user_profile import RULES
from personalization.udfs.validation import control_dead_letter

INVALID_RULES = "invalid_rules"  # DLQ reason, as for a text that does not check


class DecodeRules(ProcessFunction):
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def open(self, runtime_context: RuntimeContext) -> None:
        self._rejected = runtime_context.get_metrics_group().add_group("personalization").counter("rules_rejected")

    def process_element(self, raw: bytes, ctx: ProcessFunction.Context):
        try:
            yield RULES, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            self._rejected.inc()
            yield DLQ, control_dead_letter(INVALID_RULES, f"not UTF-8: {err}", self._topic, raw,
                                           int(time.time() * 1000)).to_wire()
