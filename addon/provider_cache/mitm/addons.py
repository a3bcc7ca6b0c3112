"""The addons that make provider-cache, wired in the order they must run."""

from __future__ import annotations

from provider_cache.mitm.console import ConsoleGuard
from provider_cache.mitm.endpoint import Endpoint
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.mitm.testchannel import TestChannel
from provider_cache.mitm.tunnels import Tunnels
from provider_cache.mitm.websockets import WebSocketCache
from provider_cache.mitm.webui import CacheCommands, FlowMarkers


def make_addons() -> list[object]:
    """New addon instances (a script reload makes new ones).

    The cache comes first, so that a hit has its answer before the endpoint looks at the
    flow (ProviderCache does not count the endpoint's requests). The mitmweb markers come
    last: they read the metadata the cache puts on each flow. The test runner's channel answers
    before the endpoint (it serves GET only). The console guard hooks no flow:
    it puts mitmdump's flow printer, redacted, at the end of mitmproxy's own chain.
    """
    cache = ProviderCache()
    return [
        WebSocketCache(cache),  # before the cache: a provider's handshake is its to decide
        cache,
        TestChannel(cache),
        Endpoint(cache.snapshot),
        FlowMarkers(cache),
        CacheCommands(cache),
        ConsoleGuard(cache),
        Tunnels(lambda: cache.settings, lambda: cache.stats),  # after the cache: its settings
    ]
