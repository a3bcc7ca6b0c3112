"""mitmproxy entry point: `mitmdump -s addon/cache.py`. Wiring only.

mitmproxy loads this file as a script (putting addon/ itself on sys.path), so
the package is imported absolutely; the fallback below makes that work even
with a mitmdump that is not the project's editable install.
"""

import sys
from pathlib import Path

try:
    import addon.provider_cache  # noqa: F401
except ImportError:  # pragma: no cover - only without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addon import endpoint
from addon.provider_cache import ProviderCache
from addon.webui import CacheCommands, FlowMarkers

cache = ProviderCache()
# The cache comes first, so that a hit has its answer before the endpoint looks at the flow
# (ProviderCache does not count the endpoint's requests). The mitmweb markers come last:
# they read the metadata the cache puts on each flow.
addons = [
    cache,
    endpoint.Endpoint(cache.snapshot),
    FlowMarkers(cache),
    CacheCommands(cache),
]
