"""Test-only mitmproxy addon: a hosts file for upstream connections.

`--set test_resolve=api.openai.com=127.0.0.1:8443` makes name resolution inside
mitmdump answer 127.0.0.1:8443 for that host (port included), so upstream
connections reach the tests' fake provider while everything mitmproxy and the
cache see (Host header, SNI, URL, key, connection reuse) still names the real
provider, as in production. It works at the resolver, not by rewriting the
connection's address, because mitmproxy reuses upstream connections by address.
"""

import socket
from collections.abc import Sequence

from mitmproxy import ctx, exceptions

_real_getaddrinfo = socket.getaddrinfo
TABLE: dict[str, tuple[str, int]] = {}


def _getaddrinfo(host, port, *args, **kwargs):
    if isinstance(host, str) and (target := TABLE.get(host.lower())):
        return _real_getaddrinfo(target[0], target[1], *args, **kwargs)
    return _real_getaddrinfo(host, port, *args, **kwargs)


class Resolve:
    def load(self, loader) -> None:
        loader.add_option("test_resolve", Sequence[str], [], "host=ip:port upstream overrides")
        socket.getaddrinfo = _getaddrinfo

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
        TABLE.clear()
        TABLE.update(table)

    def done(self) -> None:
        socket.getaddrinfo = _real_getaddrinfo


addons = [Resolve()]
