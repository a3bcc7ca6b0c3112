#!/usr/bin/env python3
"""Summarise provider-cache stats and gate CI on the hit rate (SPEC §7).

Exit 0: at or above --min-hit-rate; 1: below, or fewer provider lookups than
--min-lookups; 2: input missing or unreadable, or a bad option.
"""

import sys
from pathlib import Path

# The checkout's own package first, installed or not (as `mitmdump -s addon/cache.py` does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

from provider_cache.cli.main import script

if __name__ == "__main__":
    sys.exit(script("cache_stats", sys.argv[1:]))
