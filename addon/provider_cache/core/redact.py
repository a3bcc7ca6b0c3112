"""Secret removal for everything that is written down (SPEC §3, §4).

Secret header and query values are replaced by a marker; any secret value the
request carried is also scrubbed from stored bodies and headers, in case a
provider (or a test double) echoes it back. Pure functions.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from provider_cache.core.keys import REDACTED, KeyRules

REDACTED_BYTES = REDACTED.encode()
#: Shorter values are not scrubbed from bodies: they would match ordinary text.
MIN_SCRUB_LENGTH = 8


def redact_headers(
    headers: list[tuple[bytes, bytes]], rules: KeyRules
) -> list[tuple[bytes, bytes]]:
    return [
        (name, REDACTED_BYTES if rules.is_secret(name.decode("latin-1").lower()) else value)
        for name, value in headers
    ]


#: mitmproxy decodes the wire with surrogateescape: \udcXX stands for the undecodable byte XX.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """Decoded parameters; undecodable bytes, escaped or not, become lone surrogates."""
    return parse_qsl(query, keep_blank_values=True, errors="surrogateescape")


def redact_query(query: str, rules: KeyRules) -> str:
    pairs = _query_pairs(query)
    if not any(rules.is_secret_param(k) for k, _ in pairs):
        return query
    redacted = [(k, REDACTED if rules.is_secret_param(k) else v) for k, v in pairs]
    return urlencode(redacted, errors="surrogateescape")  # percent-encodes the original bytes


def redact_url(url: str, rules: KeyRules) -> str:
    """The URL without user info or secret query values, storable as UTF-8.

    Undecodable bytes are percent-encoded: as lone surrogates the URL could not be written.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@ is a secret too
    redacted = urlunsplit(parts._replace(netloc=netloc, query=redact_query(parts.query, rules)))
    return _UNDECODABLE.sub(lambda m: f"%{ord(m[0]) - 0xDC00:02X}", redacted)


def secret_values(headers: list[tuple[bytes, bytes]], query: str, rules: KeyRules) -> list[bytes]:
    """Every secret the request carried, in the forms it might be echoed in."""
    found: set[bytes] = set()
    for name, value in headers:
        if rules.is_secret(name.decode("latin-1").lower()):
            found.add(value.strip())
            _scheme, _, token = value.strip().partition(b" ")
            if token:
                found.add(token.strip())
    for param, param_value in _query_pairs(query):
        if rules.is_secret_param(param):
            found.add(param_value.encode("utf-8", "surrogateescape"))  # the bytes that were sent
    return sorted((v for v in found if len(v) >= MIN_SCRUB_LENGTH), key=len, reverse=True)


def scrub(data: bytes, secrets: list[bytes]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, REDACTED_BYTES)
    return data


def scrub_headers(
    headers: list[tuple[bytes, bytes]], secrets: list[bytes]
) -> list[tuple[bytes, bytes]]:
    return [(name, scrub(value, secrets)) for name, value in headers]
