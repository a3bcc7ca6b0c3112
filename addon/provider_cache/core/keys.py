"""The cache key (SPEC §3): a pure function of what a request asks the provider.

Two requests share an entry exactly when they ask the same thing, so everything
that varies between machines, SDK versions and retries is normalised away, and
secrets count only by their presence. Nothing here knows about mitmproxy or LMDB.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import msgpack

from provider_cache.core import bodies
from provider_cache.core.globs import NameMatcher

if TYPE_CHECKING:  # core/userrules.py imports this module
    from provider_cache.core.userrules import UserRules

#: Part of every key: bumped when a key could otherwise find a recording of a request that
#: asked something else. Rules that only merge requests asking the same thing (a header
#: ignored, credentials counted once) keep it: a recording they do not touch keeps its key, the
#: others miss once, and the miss diagnosis says the request was recorded under other rules.
KEY_VERSION = 1
REDACTED = "<redacted>"
#: Where a normalised request holds the user rules (cache_ignore_json, cache_normalize) that
#: changed it, with how many values each: present only then, so that a request no rule
#: touches keeps its key. The rules are key material, their counts only for the diagnosis.
RULES_APPLIED = "rules"

#: SDK, runtime and platform identification, by family: SDKs name themselves, their version,
#: the language runtime and often the OS and kernel release. None of it changes what is asked,
#: and all of it changes between a laptop and CI, or with an upgrade.
SDK_IDENTITY_HEADERS: tuple[str, ...] = (
    "user-agent",
    "*-user-agent",  # x-amz-user-agent (AWS SDK for JavaScript), x-goog-user-agent
    "*-useragent",  # x-ms-useragent (Azure OpenAI for JavaScript)
    "x-stainless-*",  # Stainless SDKs (openai, anthropic, groq, …): also retry count, timeouts
    "x-fern-*",  # Fern SDKs (cohere, …): language, SDK name and version, runtime, platform
    "x-goog-api-client",  # Google's: google-genai-sdk/<version> gl-python/<version>
    "*-sdk-*",  # amz-sdk-invocation-id, amz-sdk-request (attempt), x-sdk-version, …
)

#: Made up by the client for each request or retry: request, correlation and trace ids
#: (azure-core's x-ms-client-request-id is a fresh UUID each time), and the clock.
PER_REQUEST_HEADERS: tuple[str, ...] = (
    "*request-id",  # x-request-id, request-id, x-ms-client-request-id, x-client-request-id
    "*-requestid",
    "*correlation-id",
    "*-trace-id",  # x-amzn-trace-id (AWS X-Ray), uber-trace-id
    "traceparent",  # W3C trace context
    "tracestate",
    "baggage",
    "b3",  # Zipkin
    "x-b3-*",
    "sentry-trace",
    "x-cloud-trace-context",  # Google Cloud
    "x-datadog-*",
    "idempotency-key",  # Stainless SDKs: a fresh one per call
    "*-idempotency-key",
    "date",
    "x-*-date",  # x-amz-date (SigV4), x-ms-date, x-goog-date
)

#: Transport details that say nothing about what is asked.
TRANSPORT_HEADERS: tuple[str, ...] = (
    "accept-encoding",
    "content-length",
    "connection",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "expect",
    "x-amz-content-sha256",  # a digest of the body, which is keyed itself
    "x-provider-cache",
)

#: Request headers that vary between machines, SDK versions and retries.
IGNORED_HEADERS: tuple[str, ...] = (
    *SDK_IDENTITY_HEADERS,
    *PER_REQUEST_HEADERS,
    *TRANSPORT_HEADERS,
    # Set by the provider's own answers (Cloudflare's __cf_bm): a client that keeps cookies
    # sends one from its second request on, and a replay, which never sets one, does not.
    # Still a secret: redacted wherever it is written down.
    "cookie",
)

#: The one name every credential is keyed under, by presence: which header carried it
#: (anthropic 0.x x-api-key, 2.x Authorization) and how many (azure-core and openai 1.x
#: AzureOpenAI send api-key and Authorization) do not change what is asked. Authorization, so
#: that the keys of the requests most SDKs send are what they were before this rule.
CREDENTIAL_HEADER = "authorization"

#: Words that make a name a secret's (issue 12): any header naming one is keyed (and stored)
#: by presence only, gateways' and custom ones included (cf-aig-authorization,
#: x-portkey-api-key, helicone-auth).
SECRET_WORDS: tuple[str, ...] = (
    "*authorization*",
    "auth",
    "*-auth",
    "auth-*",
    "*-auth-*",
    "*api-key*",
    "*apikey*",
    "*-key",
    "*_key",
    "*-key-*",
    "*token*",
    "*secret*",
    "*password*",
    "*passwd*",
    "*signature*",
)

#: Request headers whose values are secrets: keyed (and stored) by presence only.
SECRET_HEADERS: tuple[str, ...] = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
    "cookie",
    "x-auth-token",
    "x-subscription-token",
    "ocp-apim-subscription-key",
    *SECRET_WORDS,
)

#: Ordinary headers the words would take for secrets; a name listed exactly is still one.
NOT_SECRET_HEADERS: tuple[str, ...] = (
    "idempotency-key",  # ignored anyway
    "sec-websocket-key",  # a nonce of the WebSocket handshake
    "cf-aig-cache-key",  # Cloudflare AI Gateway's own cache key
    "*-tokens",  # counts, such as x-max-tokens
)

#: Account identifiers (request and response headers): redacted where stored and keyed by
#: presence, unless cache_keep_account_headers.
ACCOUNT_HEADERS: tuple[str, ...] = (
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
)

#: Query parameters whose values are secrets (names compared in lower case): keys, tokens and
#: signed URLs (AWS SigV4 and SigV2, Google Cloud Storage V4 and V2, Azure SAS `sig`).
SECRET_QUERY_PARAMS: tuple[str, ...] = (
    "key",
    "api-key",
    "api_key",
    "apikey",
    "access_token",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-credential",
    "x-goog-credential",
    "awsaccesskeyid",
    "googleaccessid",
    "sig",
    *SECRET_WORDS,
    "*_auth",
    "*_auth_*",
    "auth_*",
    "*api_key*",
)

#: Ordinary parameters the words would take for secrets: pagination and counts.
NOT_SECRET_QUERY_PARAMS: tuple[str, ...] = (
    "*page_token",
    "*pagetoken",
    "*page-token",
    "*tokens",
    "*cache_key",
    "*cache-key",
    "idempotency*",
)

#: JSON request body fields whose string values are secrets, at any depth: keyed by presence,
#: scrubbed from what is stored. Matched against the name in snake case (apiKey, API-KEY and
#: api_key alike). Narrower than the header words: a bare `key` is what key-value tools take,
#: `signature` is Anthropic's thinking signature (Gemini's thoughtSignature), and `max_tokens`,
#: `prompt_cache_key` are parameters.
SECRET_JSON_FIELDS: tuple[str, ...] = (
    "*authorization*",
    "auth",
    "*_auth",
    "api_key",
    "*_api_key",
    "apikey",
    "*_apikey",
    "*access_key*",
    "*private_key*",
    "*subscription_key*",
    "token",
    "*_token",
    "*secret*",
    "*password*",
    "*passwd*",
)

#: Fields the JSON rules would take for secrets: pagination, and tokenizer tokens.
NOT_SECRET_JSON_FIELDS: tuple[str, ...] = (
    "*page_token",
    "max_*",
    "bos_token",
    "eos_token",
    "pad_token",
    "sep_token",
    "unk_token",
    "cls_token",
    "mask_token",
    "stop_token",
)

#: Distinct names whose answers are remembered (they come off the wire).
KNOWN_NAMES = 1024


class SecretNames:
    """Names matching any pattern, except those matched by a glob only and listed in `unless`.

    The exceptions stop the secret words from catching ordinary names; a name given exactly
    (such as one from cache_redact_headers) is always a secret. Answers are remembered.
    """

    def __init__(self, patterns: tuple[str, ...], unless: tuple[str, ...] = ()):
        self._patterns = NameMatcher(patterns)
        self._unless = NameMatcher(unless)
        self.matches: Callable[[str], bool] = functools.lru_cache(maxsize=KNOWN_NAMES)(
            self._matches
        )

    def __call__(self, name: str) -> bool:
        return self.matches(name)

    def _matches(self, name: str) -> bool:
        if name in self._patterns.exact:
            return True
        return self._patterns(name) and not self._unless(name)


_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    """apiKey, API-KEY, Api_Key → api_key: how JSON field names are matched."""
    return _WORD_BOUNDARY.sub("_", name).lower().replace("-", "_")


@dataclass(frozen=True)
class KeyRules:
    """Which names (glob patterns, lower case) are ignored, secret or account identifiers.

    Header and query names are secrets by `secret`/`secret_query` (less the built-in
    exceptions), JSON body fields by `secret_json`; `account` names are treated as secret
    headers and redacted in stored responses too (empty: cache_keep_account_headers).
    `user`: cache_ignore_json and cache_normalize, None when there are none.
    """

    ignored: tuple[str, ...] = IGNORED_HEADERS
    secret: tuple[str, ...] = SECRET_HEADERS
    secret_query: tuple[str, ...] = SECRET_QUERY_PARAMS
    secret_json: tuple[str, ...] = SECRET_JSON_FIELDS
    account: tuple[str, ...] = ACCOUNT_HEADERS
    user: UserRules | None = None
    _ignored: NameMatcher = field(init=False, repr=False, compare=False)
    _secret: SecretNames = field(init=False, repr=False, compare=False)
    _account: NameMatcher = field(init=False, repr=False, compare=False)
    _secret_param: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    _secret_field: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    _ignored_field: Callable[[bytes], bool] = field(init=False, repr=False, compare=False)
    json_decoder: json.JSONDecoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignored", NameMatcher(self.ignored))
        object.__setattr__(
            self, "_secret", SecretNames(self.secret + self.account, NOT_SECRET_HEADERS)
        )
        object.__setattr__(self, "_account", NameMatcher(self.account))
        # Raw names come off the wire: remember a bounded number of answers.
        query = SecretNames(self.secret_query, NOT_SECRET_QUERY_PARAMS)
        secret_param = functools.lru_cache(maxsize=KNOWN_NAMES)(lambda raw: query(raw.lower()))
        object.__setattr__(self, "_secret_param", secret_param)
        fields = SecretNames(self.secret_json, NOT_SECRET_JSON_FIELDS)
        secret_field = functools.lru_cache(maxsize=KNOWN_NAMES)(lambda raw: fields(snake_case(raw)))
        object.__setattr__(self, "_secret_field", secret_field)
        ignored = functools.lru_cache(maxsize=KNOWN_NAMES)(
            lambda raw: self.is_ignored(_text(raw).lower())
        )
        object.__setattr__(self, "_ignored_field", ignored)
        # The one parse of a JSON body for the key also puts the marker in secret fields.
        object.__setattr__(self, "json_decoder", bodies.json_decoder(secret_field, REDACTED))

    @classmethod
    def with_extra(
        cls,
        ignored: tuple[str, ...] = (),
        secret: tuple[str, ...] = (),
        *,
        keep_account: bool = False,
        user: UserRules | None = None,
    ) -> KeyRules:
        return cls(
            ignored=IGNORED_HEADERS + tuple(h.lower() for h in ignored),
            secret=SECRET_HEADERS + tuple(h.lower() for h in secret),
            account=() if keep_account else ACCOUNT_HEADERS,
            user=user or None,
        )

    def is_ignored(self, name: str) -> bool:
        return self._ignored(name)

    def is_ignored_field(self, name: bytes) -> bool:
        """is_ignored for a header name as it came off the wire (mitmproxy's header fields)."""
        return self._ignored_field(name)

    def is_secret(self, name: str) -> bool:
        """A request header (lower case) keyed by presence and redacted where stored."""
        return self._secret(name)

    def is_credential(self, name: str) -> bool:
        """A secret request header that is not an account identifier: keyed as one
        CREDENTIAL_HEADER, whichever of them carried it."""
        return self._secret(name) and not self._account(name)

    def is_account(self, name: str) -> bool:
        """A header (lower case) naming an account, redacted in stored requests and responses."""
        return self._account(name)

    def is_secret_param(self, name: str) -> bool:
        return self._secret_param(name)

    def is_secret_field(self, name: str) -> bool:
        """A JSON body field whose string value is a secret (at any depth)."""
        return self._secret_field(name)

    def is_form_secret(self, name: str) -> bool:
        """A field of a form body whose value is a secret: named as a secret query
        parameter or JSON field is (`client_secret`, `api_key`, `refresh_token`, …)."""
        return self._secret_param(name) or self._secret_field(name)


def _text(raw: bytes) -> str:
    """A header name or value as mitmproxy's `Headers` decodes it."""
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class RequestParts:
    """The parts of an HTTP request the key looks at; headers keep order and duplicates."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def normalize(req: RequestParts, rules: KeyRules) -> dict:
    """The canonical form of a request: what is keyed, and shown when a lookup misses."""
    if rules.user is not None:
        return _normalize_with(rules.user, req, rules)
    headers = normalize_headers(req.headers, rules)
    body, body_kind = bodies.canonical_body(
        req.body, dict(headers), rules.json_decoder, rules.is_form_secret
    )
    return _normalized(req, rules, headers, body, body_kind, normalize_query(req.query, rules))


def _normalized(
    req: RequestParts,
    rules: KeyRules,
    headers: list[tuple[str, str]],
    body: bytes,
    body_kind: str,
    query: list[tuple[str, str]],
) -> dict:
    headers = [
        (name, bodies.strip_boundary(value) if name == "content-type" else value)
        for name, value in headers
        if not (name == "content-encoding" and body_kind != "raw-encoded")
    ]
    return {
        "method": req.method.upper(),
        "scheme": req.scheme.lower(),
        "host": req.host.lower().rstrip("."),
        "port": req.port,
        "path": req.path,
        "query": query,
        "headers": headers,
        "body_kind": body_kind,
        "body": body,
    }


def _normalize_with(user: UserRules, req: RequestParts, rules: KeyRules) -> dict:
    """`normalize` under cache_ignore_json and cache_normalize: the JSON rules act on the one
    parse of the body, the patterns on a body that is not JSON and on query values."""
    headers = normalize_headers(req.headers, rules)
    decoder = user.decoder(rules.json_decoder)
    body, body_kind = bodies.canonical_body(req.body, dict(headers), decoder, rules.is_form_secret)
    counts = decoder.counts if body_kind == "json" else {}  # not JSON after all: raw below
    if body_kind == "raw":
        body = user.raw_body(body, counts)
    query = user.query(normalize_query(req.query, rules), counts)
    normalized = _normalized(req, rules, headers, body, body_kind, query)
    applied = user.applied(counts)
    if applied:
        normalized[RULES_APPLIED] = applied
    return normalized


def normalize_headers(
    headers: tuple[tuple[str, str], ...], rules: KeyRules
) -> list[tuple[str, str]]:
    """Lower-case names, drop ignored ones, redact secrets, sort by name (stable).

    Credentials count once, as CREDENTIAL_HEADER: that one was sent, not in which header.
    """
    kept = []
    credential = False
    for name, value in headers:
        lname = name.lower()
        if rules.is_ignored(lname):
            continue
        if rules.is_credential(lname):
            credential = True
        else:
            kept.append((lname, REDACTED if rules.is_secret(lname) else value.strip()))
    if credential:
        kept.append((CREDENTIAL_HEADER, REDACTED))
    return sorted(kept, key=lambda item: item[0])


def normalize_query(query: str, rules: KeyRules) -> list[tuple[str, str]]:
    """Decoded, sorted parameters; secret values redacted.

    Undecodable escapes (%FF) become lone surrogates instead of U+FFFD, so distinct bytes
    stay distinct, and equal the same bytes sent unescaped (which mitmproxy hands over so).
    """
    pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
    return sorted((k, REDACTED if rules.is_secret_param(k) else v) for k, v in pairs)


def cache_key(normalized: dict) -> str:
    """A fixed-size hex digest of the canonical form; the key version is part of it.

    Undecodable wire bytes arrive as lone surrogates; surrogatepass encodes every string,
    and distinct strings distinctly, where strict UTF-8 would raise.
    """
    material = list(normalized.items())
    if RULES_APPLIED in normalized:  # which user rules changed it, not how many values
        material = [(k, list(v) if k == RULES_APPLIED else v) for k, v in material]
    packed = msgpack.packb(
        [KEY_VERSION, material], use_bin_type=True, unicode_errors="surrogatepass"
    )
    return hashlib.sha256(packed).hexdigest()


def key_for(req: RequestParts, rules: KeyRules) -> tuple[str, dict]:
    normalized = normalize(req, rules)
    return cache_key(normalized), normalized
