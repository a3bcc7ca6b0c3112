"""The cache alone, without the endpoint, the mitmweb markers and the commands (benchmark only).

`mitmdump -s scripts/bench_bare_cache.py` measures what the three companion addons that
addon/cache.py wires in cost on the hit path (each addon adds to every hook's dispatch).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addon.provider_cache import ProviderCache

addons = [ProviderCache()]
