"""The redacted console (mitm/console.py) with mitmproxy's own test context and its Dumper.

The guard replaces a stock Dumper that prints to a buffer, as mitmdump's prints to stdout;
flows go through the addon manager's hooks, as the proxy sends them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.addons.dumper import Dumper
from mitmproxy.proxy.layers.http import HttpErrorHook, HttpResponseHook
from mitmproxy.proxy.layers.websocket import WebsocketEndHook, WebsocketMessageHook
from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from provider_cache.mitm.console import ConsoleGuard, RedactingDumper
from provider_cache.mitm.hooks import ProviderCache
from tests.support import secrets

QUERY = f"/v1/echo?alt=json&key={secrets.QUERY_KEY}&api_key={secrets.GOOGLE_KEY}"
BODY = {"prompt": "hi", "api_key": secrets.BODY_KEY}
SHOWN = ("key=%3Credacted%3E", "alt=json")


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the Dumper prints, on a console wide enough for whole URLs (flow_detail 1)."""
    monkeypatch.setenv("COLUMNS", "200")
    return io.StringIO()


@pytest.fixture
def tctx(cache: ProviderCache, console: io.StringIO, tmp_path: Path) -> Iterator[taddons.context]:
    """The stock Dumper, then the script's addons: as mitmdump loads them."""
    with taddons.context(Dumper(console), cache, ConsoleGuard(cache)) as ctx:
        ctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        yield ctx


def secret_flow(*, gzipped: bool = False) -> http.HTTPFlow:
    """A forwarded exchange with a secret in each place, its answer echoing them all."""
    request = tflow.treq(
        host="api.openai.com", port=443, scheme=b"https", method=b"POST", path=QUERY.encode()
    )
    request.headers["content-type"] = "application/json"
    request.headers["authorization"] = f"Bearer {secrets.OPENAI_KEY}"
    request.headers["x-api-key"] = secrets.ANTHROPIC_KEY
    request.headers["cf-aig-authorization"] = f"Bearer {secrets.GATEWAY_KEY}"
    request.headers["openai-organization"] = secrets.OPENAI_ORG
    if gzipped:
        request.headers["content-encoding"] = "gzip"
    request.content = json.dumps(BODY).encode()  # encoded as the headers say
    echoed = json.dumps({"url": QUERY, "headers": dict(request.headers), "body": BODY})
    response = tflow.tresp()
    response.headers["content-type"] = "application/json"
    response.content = echoed.encode()
    response.headers["set-cookie"] = f"__cf_bm={secrets.COOKIE}; Secure"
    response.headers["openai-project"] = secrets.OPENAI_PROJECT
    return tflow.tflow(req=request, resp=response)


def printed(
    tctx: taddons.context, console: io.StringIO, flow: http.HTTPFlow, **opts: object
) -> str:
    tctx.options.update(**opts)
    tctx.master.addons.trigger(HttpResponseHook(flow))
    return console.getvalue()


def leaked(text: str) -> list[str]:
    return [s for s in secrets.ALL if s in text]


def test_the_guard_puts_the_redacting_dumper_in_the_stock_ones_place(tctx, console):
    addons = tctx.master.addons
    assert addons.get("dumper") is None
    ours = addons.get(RedactingDumper.name)
    assert isinstance(ours, RedactingDumper) and ours.outfp is console
    assert addons.chain[-1] is ours  # where mitmdump has its Dumper: after its own addons


@pytest.mark.parametrize("detail", [1, 2, 3, 4])
def test_no_secret_is_printed_at_any_detail(tctx, console, detail):
    output = printed(tctx, console, secret_flow(), flow_detail=detail)
    assert leaked(output) == []
    assert all(part in output for part in SHOWN)
    if detail >= 2:
        assert "authorization: <redacted>" in output and "set-cookie: <redacted>" in output
        assert "openai-organization: <redacted>" in output
    if detail >= 3:
        assert '"api_key": "<redacted>"' in output and '"prompt": "hi"' in output


def test_flow_detail_zero_prints_nothing(tctx, console):
    assert printed(tctx, console, secret_flow(), flow_detail=0) == ""


def test_the_flow_itself_is_not_changed(tctx, console):
    """What goes upstream, to mitmweb, to flow files and to the cache is the real flow."""
    flow = secret_flow(gzipped=True)
    before = flow.get_state()
    printed(tctx, console, flow, flow_detail=4)
    assert flow.get_state() == before


def test_an_encoded_body_is_shown_decoded_and_redacted(tctx, console):
    output = printed(tctx, console, secret_flow(gzipped=True), flow_detail=3)
    assert leaked(output) == []
    assert '"api_key": "<redacted>"' in output and "content-encoding: gzip" in output


def test_headers_keep_the_lengths_that_were_sent(tctx, console):
    flow = secret_flow()
    output = printed(tctx, console, flow, flow_detail=3)
    assert f"content-length: {len(flow.request.raw_content or b'')}" in output


def test_the_caches_own_secret_headers_are_redacted(tctx, console, cache):
    tctx.configure(cache, cache_redact_headers=["x-team"])
    flow = secret_flow()
    flow.request.headers["x-team"] = "team-PLANTED-value-01"
    output = printed(tctx, console, flow, flow_detail=2)
    assert "x-team: <redacted>" in output and "team-PLANTED" not in output


def test_dumper_filter_still_chooses_the_flows(tctx, console):
    other = secret_flow()
    other.request.host = "example.com"
    tctx.options.update(dumper_filter="~d api.openai.com", flow_detail=1)
    assert printed(tctx, console, other) == ""
    assert "api.openai.com" in printed(tctx, console, secret_flow())


def test_an_error_names_no_secret(tctx, console):
    flow = secret_flow()
    flow.response = None
    flow.error = mflow.Error(f"upstream said no to {secrets.QUERY_KEY}")
    tctx.options.update(flow_detail=1)
    tctx.master.addons.trigger(HttpErrorHook(flow))
    assert leaked(console.getvalue()) == [] and "<redacted>" in console.getvalue()


def test_a_websocket_message_names_no_secret(tctx, console):
    flow = tflow.twebsocketflow()
    flow.request.path = f"/ws?key={secrets.QUERY_KEY}"
    flow.request.headers["authorization"] = f"Bearer {secrets.OPENAI_KEY}"
    assert flow.websocket is not None
    flow.websocket.messages[-1].content = f"echo {secrets.OPENAI_KEY}".encode()
    tctx.options.update(flow_detail=3)
    tctx.master.addons.trigger(WebsocketMessageHook(flow))
    output = console.getvalue()
    assert leaked(output) == [] and "/ws?key=%3Credacted%3E" in output
    assert "echo <redacted>" in output
    assert secrets.OPENAI_KEY.encode() in flow.websocket.messages[-1].content  # not changed


def test_a_script_reload_keeps_one_redacting_dumper_with_the_new_cache(tctx, console):
    old_guard = tctx.master.addons.get("consoleguard")
    tctx.master.addons.remove(old_guard)  # as a reload removes the script's old addons
    renewed = ProviderCache()
    tctx.master.addons.register(ConsoleGuard(renewed))
    ours = tctx.master.addons.get(RedactingDumper.name)
    assert ours.cache is renewed
    assert sum(isinstance(a, Dumper) for a in tctx.master.addons.chain) == 1


def test_nothing_is_replaced_without_a_stock_dumper(cache):
    """mitmweb and mitmproxy's console UI print no flows: they keep printing none."""
    with taddons.context(cache, ConsoleGuard(cache)) as ctx:
        assert ctx.master.addons.get(RedactingDumper.name) is None
        assert "flow_detail" not in ctx.options


class DeclaresTracing:
    """The options of mitmproxy's protocol trace, as its proxyserver and termlog declare them."""

    def load(self, loader: Loader) -> None:
        loader.add_option("proxy_debug", bool, False, "Trace the proxy's protocol layers.")
        loader.add_option("termlog_verbosity", str, "info", "Log verbosity.")


def test_the_raw_protocol_trace_is_named_as_printing_secrets(cache, caplog):
    """proxy_debug at termlog_verbosity=debug logs the raw traffic: one warning says so."""
    guard = ConsoleGuard(cache)
    with taddons.context(DeclaresTracing(), guard) as ctx:
        ctx.options.update(proxy_debug=True)
        assert "API keys included" not in caplog.text  # not traced at the default verbosity
        ctx.options.update(termlog_verbosity="debug")
        assert caplog.text.count("proxy_debug with termlog_verbosity=debug") == 1


def test_a_websocket_sessions_handshake_is_redacted_once_not_per_message(tctx, console):
    """A long session prints a line per message: the handshake's secrets are gathered at
    its first one and kept until it ends; every message is still scrubbed of them."""
    flow = tflow.twebsocketflow()
    flow.request.path = f"/ws?key={secrets.QUERY_KEY}"
    flow.request.headers["sec-websocket-protocol"] = f"openai-insecure-api-key.{secrets.OPENAI_KEY}"
    dumper = tctx.master.addons.get(RedactingDumper.name)
    tctx.options.update(flow_detail=3)
    assert flow.websocket is not None
    for n in range(3):
        flow.websocket.messages.append(
            WebSocketMessage(Opcode.TEXT, n % 2 == 0, f"{n} echo {secrets.OPENAI_KEY}".encode())
        )
        tctx.master.addons.trigger(WebsocketMessageHook(flow))
        if n == 0:
            (first,) = dumper.sessions.values()
    assert list(dumper.sessions.values()) == [first]  # kept, not worked out again
    output = console.getvalue()
    assert leaked(output) == [] and output.count("echo <redacted>") == 3
    tctx.options.update(flow_detail=1)  # another level: another redacted handshake
    tctx.master.addons.trigger(WebsocketMessageHook(flow))
    assert dumper.sessions[flow.id][0] == 1
    tctx.master.addons.trigger(WebsocketEndHook(flow))
    assert dumper.sessions == {}
