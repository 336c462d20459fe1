"""Durations as operators write them in the config and the rules (``500ms``, ``5s``, ``30m``,
``1h``, ``7d``): one parser, so both read the same text the same way."""

from __future__ import annotations

import re

UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"\s*(\d+)\s*(ms|s|m|h|d)\s*")


def parse_duration_ms(text: str) -> int:
    """Milliseconds of a duration text; raises ``ValueError`` for anything else."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a duration like 500ms, 5s, 30m, 1h or 7d, got {text!r}")
    return int(match.group(1)) * UNIT_MS[match.group(2)]
