"""One duration parser for the config and the rules (core.durations)."""

import pytest

from personalization.config.settings import parse_duration_ms as config_duration
from personalization.core.durations import parse_duration_ms


@pytest.mark.parametrize(("text", "ms"), [("250ms", 250), ("5s", 5_000), ("30m", 1_800_000), ("1h", 3_600_000),
                                          ("7d", 604_800_000), (" 10 m ", 600_000), ("0s", 0)])
def test_units(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms == config_duration(text)


@pytest.mark.parametrize("text", ["", "5", "5 w", "-5s", "1.5h", "5sec", "s"])
def test_anything_else_is_a_value_error_naming_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="500ms, 5s, 30m, 1h or 7d"):
        parse_duration_ms(text)


def test_the_config_never_echoes_a_bad_value() -> None:
    with pytest.raises(ValueError) as refused:
        config_duration("hunter2")
    assert "hunter2" not in str(refused.value)
