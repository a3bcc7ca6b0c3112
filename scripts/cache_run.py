#!/usr/bin/env python3
"""Run COMMAND behind a managed provider-cache proxy on 127.0.0.1 (SPEC §7).

Exit: COMMAND's status (128 + N when a signal N killed it); with --min-hit-rate or
--min-lookups and a successful COMMAND, 1 when the hit rate or the number of lookups is
below it; 2 when the proxy cannot start or the usage is wrong.
"""

import sys
from pathlib import Path

# The checkout's own package first, installed or not (as `mitmdump -s addon/cache.py` does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

from provider_cache.cli.main import script

if __name__ == "__main__":
    sys.exit(script("cache_run", sys.argv[1:]))
