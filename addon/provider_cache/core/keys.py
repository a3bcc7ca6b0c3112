"""The cache key (SPEC §3): a pure function of what a request asks the provider.

Two requests share an entry exactly when they ask the same thing, so everything
that varies between machines, SDK versions and retries is normalised away, and
secrets count only by their presence. Nothing here knows about mitmproxy or LMDB.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import msgpack

from provider_cache.core import bodies
from provider_cache.core.globs import NameMatcher

KEY_VERSION = 1
REDACTED = "<redacted>"

#: Request headers that vary between machines, SDK versions and retries.
IGNORED_HEADERS: tuple[str, ...] = (
    "user-agent",
    "x-stainless-*",
    "accept-encoding",
    "content-length",
    "connection",
    "date",
    "traceparent",
    "tracestate",
    "x-request-id",
    "idempotency-key",
    "x-amz-date",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "x-amz-user-agent",
    "x-amz-content-sha256",
    # Transport details that say nothing about what is asked.
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "expect",
    "x-provider-cache",
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
)

#: Query parameters whose values are secrets.
SECRET_QUERY_PARAMS: tuple[str, ...] = (
    "key",
    "api-key",
    "api_key",
    "apikey",
    "access_token",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-credential",
)


@dataclass(frozen=True)
class KeyRules:
    """Which header names (glob patterns, lower case) are ignored or secret."""

    ignored: tuple[str, ...] = IGNORED_HEADERS
    secret: tuple[str, ...] = SECRET_HEADERS
    secret_query: tuple[str, ...] = SECRET_QUERY_PARAMS
    _ignored: NameMatcher = field(init=False, repr=False, compare=False)
    _secret: NameMatcher = field(init=False, repr=False, compare=False)
    _ignored_field: Callable[[bytes], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignored", NameMatcher(self.ignored))
        object.__setattr__(self, "_secret", NameMatcher(self.secret))
        # Raw names come off the wire: remember a bounded number of answers.
        ignored = functools.lru_cache(maxsize=1024)(lambda raw: self.is_ignored(_text(raw).lower()))
        object.__setattr__(self, "_ignored_field", ignored)

    @classmethod
    def with_extra(cls, ignored: tuple[str, ...] = (), secret: tuple[str, ...] = ()) -> KeyRules:
        return cls(
            ignored=IGNORED_HEADERS + tuple(h.lower() for h in ignored),
            secret=SECRET_HEADERS + tuple(h.lower() for h in secret),
        )

    def is_ignored(self, name: str) -> bool:
        return self._ignored(name)

    def is_ignored_field(self, name: bytes) -> bool:
        """is_ignored for a header name as it came off the wire (mitmproxy's header fields)."""
        return self._ignored_field(name)

    def is_secret(self, name: str) -> bool:
        return self._secret(name)

    def is_secret_param(self, name: str) -> bool:
        return name.lower() in self.secret_query


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
    headers = normalize_headers(req.headers, rules)
    body, body_kind = bodies.canonical_body(req.body, dict(headers))
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
        "query": normalize_query(req.query, rules),
        "headers": headers,
        "body_kind": body_kind,
        "body": body,
    }


def normalize_headers(
    headers: tuple[tuple[str, str], ...], rules: KeyRules
) -> list[tuple[str, str]]:
    """Lower-case names, drop ignored ones, redact secrets, sort by name (stable)."""
    kept = []
    for name, value in headers:
        lname = name.lower()
        if rules.is_ignored(lname):
            continue
        kept.append((lname, REDACTED if rules.is_secret(lname) else value.strip()))
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
    packed = msgpack.packb(
        [KEY_VERSION, list(normalized.items())], use_bin_type=True, unicode_errors="surrogatepass"
    )
    return hashlib.sha256(packed).hexdigest()


def key_for(req: RequestParts, rules: KeyRules) -> tuple[str, dict]:
    normalized = normalize(req, rules)
    return cache_key(normalized), normalized
