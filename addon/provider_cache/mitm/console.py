"""mitmdump's console without secrets (SPEC §4, issue 12).

mitmdump's own Dumper prints every flow as it is: the URL with its query from
flow_detail 1 (cut to the terminal's width: a wide console shows `?key=…` whole), the
headers from 2, the bodies from 3. RedactingDumper prints a redacted copy of each flow
instead, redacted by core/redact.py as what is stored is (secret headers, query values and
JSON fields, account identifiers, cookies, and any echo of the request's secrets). The flow
itself, which goes upstream and to mitmweb, flow files and the cache, is never touched.

ConsoleGuard, one of the script's addons, puts a RedactingDumper in the stock Dumper's place
at the end of the chain, so it prints at the same point of each hook, with the same options
(flow_detail, dumper_filter, dumper_default_contentview; -q sets flow_detail=0). mitmweb and
mitmproxy's console UI have no Dumper: there is nothing to replace. All traffic is
redacted, provider or not: a secret is one wherever it goes.
"""

from __future__ import annotations

import copy
import logging

from mitmproxy import ctx, http
from mitmproxy import flow as mflow
from mitmproxy.addonmanager import Loader
from mitmproxy.addons.dumper import Dumper
from mitmproxy.websocket import WebSocketData

from provider_cache.core import redact
from provider_cache.core.keys import KeyRules
from provider_cache.mitm.flows import content_type_of, query_of
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.mitm.wsrecording import handshake_secrets

logger = logging.getLogger(__name__)

#: Response headers whose values are the client's own session secrets: stored never (records),
#: shown redacted.
COOKIE_HEADERS = frozenset({b"set-cookie", b"set-cookie2"})
#: The name mitmproxy's AddonManager knows the stock Dumper by (its class name, lower case).
STOCK_DUMPER = "dumper"
#: WebSocket sessions whose redacted handshake is kept at once (each is dropped at its end).
MAX_SESSIONS = 1024


def shown_flow(flow: http.HTTPFlow, rules: KeyRules, detail: int) -> http.HTTPFlow:
    """A copy of `flow` for printing at flow_detail `detail`: what that level shows of it,
    every secret redacted (a WebSocket message: RedactingDumper.websocket_message)."""
    request = flow.request
    headers = list(request.headers.fields)
    fields: dict[str, list[str]] = {}
    if detail >= 2:  # a secret of the body may be echoed in headers; parse only when shown
        fields = redact.body_secret_fields(request.raw_content or b"", headers, rules)
    secrets = redact.secret_values(headers, query_of(request), rules, fields)
    shown = copy.copy(flow)  # what the Dumper reads of it (is_replay, metadata, connections)
    shown.request = _shown_request(request, rules, secrets, fields, detail)
    if flow.response is not None:
        shown.response = _shown_response(flow.response, rules, secrets, detail)
    if flow.error is not None:
        shown.error = mflow.Error(_scrub_text(flow.error.msg, secrets), flow.error.timestamp)
    return shown


def _copy[Message: (http.Request, http.Response)](message: Message) -> Message:
    """A request or response whose fields can be replaced without touching the original: its
    data is copied, not the values in it (each replaced below, never changed in place).

    Not mitmproxy's `copy()`: a round trip through its state that type-checks every field,
    which cost a hit about 10% more proxy CPU at flow_detail=1 (printed by default).
    """
    shown = copy.copy(message)
    shown.data = copy.copy(message.data)
    return shown


def _shown_request(
    request: http.Request,
    rules: KeyRules,
    secrets: list[bytes],
    fields: redact.Fields,
    detail: int,
) -> http.Request:
    shown = _copy(request)
    if request.path:  # a CONNECT request has none
        shown.path = redact.redact_url(request.path, rules, secrets)
    if detail >= 2:
        shown.headers = _headers(
            redact.redact_headers(list(request.headers.fields), rules), secrets
        )
        if request.trailers:
            trailers = redact.redact_headers(list(request.trailers.fields), rules)
            shown.trailers = _headers(trailers, secrets)
    if detail >= 3:
        _redact_body(shown, secrets, fields)
    return shown


def _shown_response(
    response: http.Response, rules: KeyRules, secrets: list[bytes], detail: int
) -> http.Response:
    if detail < 2:
        return response  # only its status line is printed: read, never changed
    shown = _copy(response)
    shown.headers = _headers(_response_headers(list(response.headers.fields), rules), secrets)
    if response.trailers:
        shown.trailers = _headers(_response_headers(list(response.trailers.fields), rules), secrets)
    if detail >= 3:
        _redact_body(shown, secrets, {})
    return shown


def _response_headers(headers: redact.Headers, rules: KeyRules) -> redact.Headers:
    """Account identifiers redacted, as stored; cookies too (the store drops them)."""
    return [
        (name, redact.REDACTED_BYTES if name.lower() in COOKIE_HEADERS else value)
        for name, value in redact.redact_account_headers(headers, rules)
    ]


def _headers(fields: redact.Headers, secrets: list[bytes]) -> http.Headers:
    return http.Headers(redact.scrub_headers(fields, secrets))


def _redact_body(message: http.Message, secrets: list[bytes], fields: redact.Fields) -> None:
    """The body of a copy, decoded, redacted and encoded again as its headers say, so that
    the Dumper's content view (which decodes it) shows it redacted. The headers stay as
    they were sent (the content-length of the real body)."""
    try:
        body = message.get_content()
    except ValueError:  # not decodable: the Dumper shows the raw bytes
        if message.raw_content:
            message.raw_content = redact.scrub(message.raw_content, secrets)
        return
    if not body:
        return
    decoded = content_type_of(list(message.headers.fields))  # the body's, no coding now
    redacted = redact.scrub(redact.redact_body_fields(body, decoded, fields), secrets)
    if redacted != body:
        headers = message.headers.copy()
        message.content = redacted
        message.headers = headers


def _scrub_text(text: str, secrets: list[bytes]) -> str:
    data = text.encode("utf-8", "surrogateescape")
    return redact.scrub(data, secrets).decode("utf-8", "surrogateescape")


class RedactingDumper(Dumper):
    """mitmproxy's Dumper, printing redacted copies: the same lines, options and colours."""

    name = "redactingdumper"  # the AddonManager's name for it

    def __init__(self, stock: Dumper, cache: ProviderCache) -> None:
        super().__init__(stock.outfp)
        self.out_has_vt_codes = stock.out_has_vt_codes
        self.filter = stock.filter  # dumper_filter, as parsed; configure() keeps it current
        self.cache = cache
        #: A WebSocket session's detail level, redacted handshake and secrets, by flow id.
        self.sessions: dict[str, tuple[int, http.HTTPFlow, list[bytes]]] = {}

    def load(self, loader: Loader) -> None:
        """Nothing to declare: the stock Dumper declared its options, and declaring them again
        would reset them (mitmproxy compares the help text it stored reflowed)."""

    def echo_flow(self, f: http.HTTPFlow) -> None:
        super().echo_flow(shown_flow(f, self.cache.keyer.rules, ctx.options.flow_detail))

    def websocket_message(self, f: http.HTTPFlow) -> None:
        """Each message scrubbed of the handshake's secrets, which are gathered (and the
        handshake redacted) once per session and detail level, not once per message."""
        if f.websocket is None or not f.websocket.messages or not self.match(f):
            return  # the Dumper matches again, on the copy: the same answer
        detail = ctx.options.flow_detail
        known = self.sessions.get(f.id)
        if known is None or known[0] != detail:
            if len(self.sessions) >= MAX_SESSIONS:  # a session that never ended: forget one
                self.sessions.pop(next(iter(self.sessions)))
            handshake = shown_flow(f, self.cache.keyer.rules, detail)
            secrets = handshake_secrets(f.request, self.cache.keyer.rules)
            known = self.sessions[f.id] = (detail, handshake, secrets)
        _, handshake, secrets = known
        message = copy.copy(f.websocket.messages[-1])
        message.content = redact.scrub(message.content, secrets)
        shown = copy.copy(handshake)
        shown.websocket = WebSocketData(messages=[message])
        super().websocket_message(shown)

    def websocket_end(self, f: http.HTTPFlow) -> None:
        self.sessions.pop(f.id, None)
        super().websocket_end(f)


class ConsoleGuard:
    """Puts a RedactingDumper in place of mitmdump's stock Dumper, once per process.

    A script reload makes a new guard (and cache), which finds the RedactingDumper in place
    and gives it the new cache, whose key rules it redacts by.
    """

    def __init__(self, cache: ProviderCache) -> None:
        self.cache = cache

    def load(self, loader: Loader) -> None:
        addons = loader.master.addons
        ours = addons.get(RedactingDumper.name)
        if isinstance(ours, RedactingDumper):
            ours.cache = self.cache
            return
        stock = addons.get(STOCK_DUMPER)
        if not isinstance(stock, Dumper):  # mitmweb, mitmproxy's console UI: none
            return
        addons.remove(stock)
        addons.add(RedactingDumper(stock, self.cache))

    def configure(self, updated: set[str]) -> None:
        """mitmproxy's protocol trace logs the raw traffic, which no copy can redact: say so."""
        if {"proxy_debug", "termlog_verbosity"} & updated and _traces_raw_traffic():
            logger.warning(
                "provider-cache: proxy_debug with termlog_verbosity=debug prints the raw "
                "traffic, API keys included: for debugging only, never in CI logs"
            )


def _traces_raw_traffic() -> bool:
    options = ctx.options
    debug = getattr(options, "termlog_verbosity", "info") == "debug"
    return debug and bool(getattr(options, "proxy_debug", False))
