"""mitmproxy entry point: `mitmdump -s addon/cache.py`. Wiring only.

mitmproxy puts this file's directory (addon/) on sys.path while it loads it, so the
checkout's own package is the one imported, installed or not.
"""

from provider_cache.mitm.addons import make_addons

addons = make_addons()
