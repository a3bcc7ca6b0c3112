"""The mitmproxy script of the installed package: `mitmdump -s "$(provider-cache addon-path)"`.

Wiring only, like the checkout's addon/cache.py.
"""

from provider_cache.mitm.addons import make_addons

addons = make_addons()
