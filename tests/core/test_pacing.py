"""cache_replay_timing and when each replayed chunk is due (core/pacing.py)."""

from __future__ import annotations

import pytest

from provider_cache.core.pacing import due_times, parse_timing


@pytest.mark.parametrize(
    ("value", "factor"),
    [
        ("none", None),
        ("None", None),
        (" none ", None),
        ("recorded", 1.0),
        ("RECORDED", 1.0),
        ("1", 1.0),
        ("0.5", 0.5),
        ("2", 2.0),
        ("1e-3", 0.001),
        (".25", 0.25),
    ],
)
def test_parse_timing(value: str, factor: float | None) -> None:
    assert parse_timing(value) == factor


@pytest.mark.parametrize("value", ["", "0", "-1", "-0.5", "fast", "nan", "inf", "1/2", "0x1"])
def test_a_bad_value_is_a_value_error_naming_the_valid_ones(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_timing(value)
    message = str(info.value)
    assert message.startswith("cache_replay_timing takes none, recorded or a positive factor")
    assert message.endswith(f"got {value!r}")


def test_due_times_scale_the_recorded_offsets() -> None:
    offsets = [0.0, 0.1, 0.35, 1.0]
    assert due_times(offsets, 1.0) == offsets
    assert due_times(offsets, 0.5) == [0.0, 0.05, 0.175, 0.5]
    assert due_times(offsets, 2) == [0.0, 0.2, 0.7, 2.0]
    assert due_times([], 0.5) == []
