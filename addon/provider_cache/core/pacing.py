"""Replay with the recorded pacing (SPEC §4, Timing): `cache_replay_timing`, and when
each chunk of a stream is due.

`none` (the default) replays as fast as possible; `recorded` at the pace the chunks
arrived while recording; a factor scales that pace (`0.5`: twice as fast, `2`: half as
fast). Entries without offsets (unstreamed, or recorded before offsets were) replay
unpaced whatever the option says. Pure: no mitmproxy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NONE = "none"
RECORDED = "recorded"
OPTION_FORM = "none, recorded or a positive factor such as 0.5 (twice as fast)"


def parse_timing(value: str) -> float | None:
    """The factor the recorded offsets are multiplied by; None for `none`."""
    text = value.strip().lower()
    if text == NONE:
        return None
    if text == RECORDED:
        return 1.0
    try:
        factor = float(text)
    except ValueError:
        factor = math.nan
    if not 0 < factor < math.inf:
        raise ValueError(f"cache_replay_timing takes {OPTION_FORM}; got {value!r}")
    return factor


def due_times(offsets: Sequence[float], factor: float) -> list[float]:
    """When each chunk is due, in seconds after the answer's headers are sent."""
    return [offset * factor for offset in offsets]
