"""Test-only mitmproxy addon: a hosts file for upstream connections.

`--set test_resolve=api.openai.com=127.0.0.1:8443` sends upstream connections for
that host to the tests' fake provider, while the request itself (Host header, SNI,
URL, cache key) still names the real provider, as in production.
"""

from collections.abc import Sequence

from mitmproxy import ctx, exceptions
from mitmproxy.proxy import server_hooks


class Resolve:
    def __init__(self) -> None:
        self.table: dict[str, tuple[str, int]] = {}

    def load(self, loader) -> None:
        loader.add_option("test_resolve", Sequence[str], [], "host=ip:port upstream overrides")

    def configure(self, updated: set[str]) -> None:
        if "test_resolve" not in updated:
            return
        table = {}
        for item in ctx.options.test_resolve:
            host, sep, target = item.partition("=")
            ip, _, port = target.rpartition(":")
            if not sep or not ip or not port.isdigit():
                raise exceptions.OptionsError(f"test_resolve wants host=ip:port, got {item!r}")
            table[host.lower()] = (ip, int(port))
        self.table = table

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.address and (target := self.table.get(data.server.address[0].lower())):
            data.server.address = target


addons = [Resolve()]
