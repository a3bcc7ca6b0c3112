"""The cache alone, without the endpoint, the mitmweb markers and the commands (benchmark only).

`mitmdump -s scripts/benchmark/bare_cache.py` measures what the three companion addons that
addon/cache.py wires in cost on the hit path (each addon adds to every hook's dispatch).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "addon"))  # the checkout's package

from provider_cache.mitm.hooks import ProviderCache

addons = [ProviderCache()]
