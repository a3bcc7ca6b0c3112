"""Only provider traffic is intercepted; other TLS is tunnelled untouched (SPEC §2).

mitmproxy terminates the TLS of every connection by default, which breaks clients that
pin certificates or present their own (mTLS). Its `allow_hosts` option tunnels all but
the matching connections, so this addon keeps it equal to the cached hosts (`cache_hosts`
as regexes, core/hosts.py) and the endpoint's host, plus whatever the user allowed
themselves. It follows `cache_hosts` when that changes at run time.

Why a union with the user's `allow_hosts`: a user who names a host there wants to see it
(in mitmweb, say), and providers must stay intercepted or they would not be cached.
`--set allow_hosts=.` intercepts everything again. `ignore_hosts` is left alone: mitmproxy
applies it after `allow_hosts`, so it can still tunnel a host of either list.

A tunnel never reaches the cache's `request` hook, so it is counted as `passthrough`
once per connection (its requests are not visible) by TunnelCounter, at the end of
mitmproxy's chain: script addons run before mitmproxy's own NextLayer, which decides.
"""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import layer
from mitmproxy.proxy.layers import TCPLayer

from provider_cache.core import hosts
from provider_cache.core.stats import Stats
from provider_cache.mitm.options import Settings


class Tunnels:
    def __init__(self, settings: Callable[[], Settings | None], stats: Callable[[], Stats]):
        self.settings = settings
        self.stats = stats
        #: The `allow_hosts` entries this addon put there; the others are the user's.
        self.ours: tuple[str, ...] = ()

    def load(self, loader: Loader) -> None:
        """The counter goes once per process; a script reload hands it the new stats."""
        counter = loader.master.addons.get(TunnelCounter.name)
        if isinstance(counter, TunnelCounter):
            counter.stats = self.stats
        else:
            loader.master.addons.add(TunnelCounter(self.stats))

    def configure(self, updated: set[str]) -> None:
        """Runs after the cache's configure (see addons.py), which parsed `cache_hosts`."""
        settings = self.settings()
        if settings is None or (self.ours and not {"cache_hosts", "allow_hosts"} & updated):
            return
        ours = hosts.intercepted(settings.hosts)
        users = [entry for entry in ctx.options.allow_hosts if entry not in self.ours]
        wanted = [*users, *(entry for entry in ours if entry not in users)]
        self.ours = ours
        if wanted != list(ctx.options.allow_hosts):
            ctx.options.update(allow_hosts=wanted)  # configures again: then nothing to do


class TunnelCounter:
    """Counts the connections mitmproxy's NextLayer chose to pass through untouched."""

    name = "provider-cache-tunnels"

    def __init__(self, stats: Callable[[], Stats]):
        self.stats = stats

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        chosen = nextlayer.layer
        if isinstance(chosen, TCPLayer) and chosen.flow is None:  # ignored: a tunnel
            self.stats().pass_through()
