"""Secret removal for everything that is written down (SPEC §3, §4).

Secret header and query values are replaced by a marker; any secret value the
request carried is also scrubbed from stored bodies and headers, in case a
provider (or a test double) echoes it back. Pure functions.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from addon.keys import REDACTED, KeyRules

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


def redact_query(query: str, rules: KeyRules) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(rules.is_secret_param(k) for k, _ in pairs):
        return query
    return urlencode([(k, REDACTED if rules.is_secret_param(k) else v) for k, v in pairs])


def redact_url(url: str, rules: KeyRules) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@ is a secret too
    return urlunsplit(parts._replace(netloc=netloc, query=redact_query(parts.query, rules)))


def secret_values(headers: list[tuple[bytes, bytes]], query: str, rules: KeyRules) -> list[bytes]:
    """Every secret the request carried, in the forms it might be echoed in."""
    found: set[bytes] = set()
    for name, value in headers:
        if rules.is_secret(name.decode("latin-1").lower()):
            found.add(value.strip())
            _scheme, _, token = value.strip().partition(b" ")
            if token:
                found.add(token.strip())
    for name, value in parse_qsl(query, keep_blank_values=True):
        if rules.is_secret_param(name):
            found.add(value.encode())
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
