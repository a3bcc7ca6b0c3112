#!/usr/bin/env python3
"""Manage a provider-cache store: ls, show, rm, prune, export, import, merge, verify, misses.

Exit 0 on success; 1 when `verify` finds an entry that does not decode, or `export`/`merge`
skipped corrupt entries; 2 on bad input (missing store, unknown key, unreadable file, bad
option); 141 when the output pipe closes early.
"""

import sys
from pathlib import Path

# The checkout's own package first, installed or not (as `mitmdump -s addon/cache.py` does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

from provider_cache.cli.main import script

if __name__ == "__main__":
    sys.exit(script("recordings", sys.argv[1:]))
