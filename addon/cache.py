"""mitmproxy entry point: `mitmdump -s addon/cache.py`. Wiring only.

mitmproxy loads this file as a script (putting addon/ itself on sys.path), so
the package is imported absolutely; the fallback below makes that work even
with a mitmdump that is not the project's editable install.
"""

import sys
from pathlib import Path

try:
    from addon.provider_cache import ProviderCache
except ImportError:  # pragma: no cover - only without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from addon.provider_cache import ProviderCache

addons = [ProviderCache()]
