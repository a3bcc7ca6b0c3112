"""Only provider traffic is intercepted: allow_hosts follows cache_hosts (SPEC §2, issue 13).

On mitmproxy's own option machinery and its own NextLayer addon, which makes the decision
to tunnel; tests/e2e/test_options.py checks it with real TLS clients.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import TCPLayer, modes
from mitmproxy.test import taddons, tflow

from provider_cache.core.hosts import BUILTIN_HOSTS, intercepted
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.mitm.tunnels import Tunnels

USERS = r"^inspect\.example\.com:"


@pytest.fixture
def tunnels(cache: ProviderCache) -> Tunnels:
    return Tunnels(lambda: cache.settings, lambda: cache.stats)


def context_of(
    cache: ProviderCache, tunnels: Tunnels, tmp_path, **options: object
) -> taddons.context:
    """The cache before the tunnels, as addons.py wires them; NextLayer is mitmproxy's."""
    tctx = taddons.context(Proxyserver(), NextLayer(), cache, tunnels)
    tctx.options.update(**options)
    tctx.configure(cache, cache_dir=str(tmp_path / "cache"))
    return tctx


@pytest.fixture
def tctx(cache: ProviderCache, tunnels: Tunnels, tmp_path) -> Iterator[taddons.context]:
    with context_of(cache, tunnels, tmp_path) as tctx:
        yield tctx


def decide(tctx: taddons.context, host: str, port: int = 443) -> layer.Layer | None:
    """The layer mitmproxy's NextLayer picks for a CONNECT tunnel to host:port."""
    context = Context(tflow.tclient_conn(), tctx.options)
    context.server.address = (host, port)
    context.layers = [modes.HttpProxy(context)]
    nextlayer = layer.NextLayer(context)
    tctx.master.addons.trigger(layer.NextLayerHook(nextlayer))  # type: ignore[attr-defined]
    return nextlayer.layer


def tunnelled(layer_: layer.Layer | None) -> bool:
    return isinstance(layer_, TCPLayer) and layer_.flow is None


def test_allow_hosts_are_the_cached_hosts_and_the_endpoint(tctx, cache) -> None:
    assert tuple(tctx.options.allow_hosts) == intercepted(BUILTIN_HOSTS)
    assert any("provider\\-cache\\.internal" in entry for entry in tctx.options.allow_hosts)


@pytest.mark.parametrize(
    ("host", "port", "tunnel"),
    [
        ("example.com", 443, True),
        ("pinned.bank.example", 8443, True),
        ("api.openai.com", 443, False),
        ("API.OpenAI.com", 443, False),
        ("api.openai.com.", 443, False),
        ("myres.openai.azure.com", 443, False),
        ("bedrock-runtime.eu-west-1.amazonaws.com", 443, False),
        ("s3.eu-west-1.amazonaws.com", 443, True),
        ("api.openai.com.evil.example", 443, True),
        ("provider-cache.internal", 443, False),
    ],
)
def test_mitmproxy_tunnels_what_is_not_cached(tctx, host, port, tunnel) -> None:
    assert tunnelled(decide(tctx, host, port)) is tunnel


def test_a_tunnel_counts_as_passthrough_once(tctx, cache) -> None:
    decide(tctx, "example.com")
    decide(tctx, "api.openai.com")
    decide(tctx, "provider-cache.internal")
    assert cache.stats.passthrough == 1


def test_allow_hosts_follow_cache_hosts_at_run_time(tctx, cache) -> None:
    tctx.configure(cache, cache_hosts=["*.llm.internal"])
    assert tuple(tctx.options.allow_hosts) == intercepted(("*.llm.internal",))
    assert not tunnelled(decide(tctx, "a.llm.internal"))
    assert tunnelled(decide(tctx, "api.openai.com"))
    tctx.configure(cache, cache_hosts=["builtin"])
    assert not tunnelled(decide(tctx, "api.openai.com"))
    assert tunnelled(decide(tctx, "a.llm.internal"))


def test_a_bad_cache_hosts_leaves_allow_hosts_as_they_were(tctx, cache) -> None:
    before = list(tctx.options.allow_hosts)
    with pytest.raises(Exception, match="empty host pattern"):
        tctx.configure(cache, cache_hosts=[""])
    assert tctx.options.allow_hosts == before


def test_the_users_own_allow_hosts_are_kept_beside_ours(cache, tunnels, tmp_path) -> None:
    """A user who allows a host wants to see it (mitmweb); providers must stay cached."""
    with context_of(cache, tunnels, tmp_path, allow_hosts=[USERS]) as tctx:
        assert tctx.options.allow_hosts == [USERS, *intercepted(BUILTIN_HOSTS)]
        assert not tunnelled(decide(tctx, "inspect.example.com"))
        tctx.configure(cache, cache_hosts=["llm.internal"])
        assert tctx.options.allow_hosts == [USERS, *intercepted(("llm.internal",))]
        assert not tunnelled(decide(tctx, "inspect.example.com"))
        assert tunnelled(decide(tctx, "example.com"))


def test_allow_hosts_replaced_at_run_time_keep_the_providers(tctx) -> None:
    tctx.options.update(allow_hosts=[USERS])
    assert tctx.options.allow_hosts == [USERS, *intercepted(BUILTIN_HOSTS)]
    assert not tunnelled(decide(tctx, "api.openai.com"))


def test_allow_everything_intercepts_everything(cache, tunnels, tmp_path) -> None:
    """`--set allow_hosts=.` is the way back to intercepting all traffic."""
    with context_of(cache, tunnels, tmp_path, allow_hosts=["."]) as tctx:
        assert not tunnelled(decide(tctx, "example.com"))


def test_the_users_ignore_hosts_still_tunnel_a_provider(cache, tunnels, tmp_path) -> None:
    """mitmproxy applies ignore_hosts after allow_hosts: the user's word is the last."""
    with context_of(cache, tunnels, tmp_path, ignore_hosts=[r"^api\.openai\.com:"]) as tctx:
        assert tunnelled(decide(tctx, "api.openai.com"))
        assert not tunnelled(decide(tctx, "api.anthropic.com"))
