#!/usr/bin/env python3
"""The self-healing loop (SPEC §7): replay; if short, re-record and verify, with backoff.

Exit 0: the (verified) hit rate meets --min-hit-rate;
1: it does not, after the attempts, or a rebuild is not yet allowed (backoff);
2: bad usage (an option out of range: --max-attempts 0, a negative delay), or the proxy
cannot start.
"""

import sys
from pathlib import Path

# The checkout's own package first, installed or not (as `mitmdump -s addon/cache.py` does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

from provider_cache.cli.main import script

if __name__ == "__main__":
    sys.exit(script("cache_rebuild", sys.argv[1:]))
