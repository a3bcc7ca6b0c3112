"""How times are written for people: UTC, to the second, the same on every machine."""

from __future__ import annotations

import functools
import time

STAMP = "%Y-%m-%d %H:%M:%S"
ISO = "%Y-%m-%dT%H:%M:%SZ"


def stamp(timestamp: float) -> str:
    """`2025-01-02 03:04:05` (UTC): for table columns."""
    return time.strftime(STAMP, time.gmtime(timestamp))


@functools.lru_cache(maxsize=1024)  # mitmweb comments every hit with it
def stamp_utc(timestamp: float) -> str:
    """`2025-01-02 03:04:05 UTC`: for sentences and comments."""
    return f"{stamp(timestamp)} UTC"


def iso(timestamp: float) -> str:
    """`2025-01-02T03:04:05Z`: for machine-readable exports."""
    return time.strftime(ISO, time.gmtime(timestamp))
