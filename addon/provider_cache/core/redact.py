"""Secret removal for everything that is written down (SPEC §3, §4).

Secret header and query values are replaced by a marker, and so are the string values of
secret JSON and form body fields and account identifier headers; any secret value the request
carried is also scrubbed from stored bodies, headers and URLs, in the forms it might be
echoed in (percent-encoded, base64), in case a provider (or a test double) echoes it back.
Pure functions.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

from provider_cache.core.bodies import (
    decode_content,
    form_secret_values,
    is_form_type,
    is_json_type,
    redact_form,
)
from provider_cache.core.keys import REDACTED, KeyRules

REDACTED_BYTES = REDACTED.encode()
#: The marker where it replaces part of a URL: percent-encoded, as a query value gets it.
REDACTED_IN_URL = quote(REDACTED).encode()
#: Shorter values are not scrubbed from bodies: they would match ordinary text.
MIN_SCRUB_LENGTH = 8

Headers = list[tuple[bytes, bytes]]


def redact_headers(headers: Headers, rules: KeyRules) -> Headers:
    """Request headers with the values of secret ones (account identifiers too) replaced."""
    return [
        (name, REDACTED_BYTES if rules.is_secret(name.decode("latin-1").lower()) else value)
        for name, value in headers
    ]


def redact_account_headers(headers: Headers, rules: KeyRules) -> Headers:
    """Response headers with the values of account identifiers replaced (unless kept)."""
    return [
        (name, REDACTED_BYTES if rules.is_account(name.decode("latin-1").lower()) else value)
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


def _escape_undecodable(text: str) -> str:
    return _UNDECODABLE.sub(lambda m: f"%{ord(m[0]) - 0xDC00:02X}", text)


def redact_url(url: str, rules: KeyRules, secrets: Sequence[bytes] = ()) -> str:
    """The URL without user info or secret query values, storable as UTF-8.

    Any of the `secrets` (secret_values) found elsewhere in it, such as a key repeated in
    the path, is replaced by the marker too. Undecodable bytes are percent-encoded: as lone
    surrogates the URL could not be written.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@ is a secret too
    redacted = urlunsplit(parts._replace(netloc=netloc, query=redact_query(parts.query, rules)))
    redacted = _escape_undecodable(redacted)
    data = redacted.encode("utf-8", "surrogatepass")
    found = [s for s in secrets if s in data]
    if not found:
        return redacted
    for secret in found:
        data = data.replace(secret, REDACTED_IN_URL)
    return _escape_undecodable(data.decode("utf-8", "surrogateescape"))


def _header(headers: Headers, wanted: bytes) -> str:
    for name, value in headers:
        if name.lower() == wanted:
            return value.decode("latin-1")
    return ""


#: Secret fields of a JSON body: the string values of each, by field name.
Fields = Mapping[str, Sequence[str]]


def body_secret_fields(body: bytes, headers: Headers, rules: KeyRules) -> dict[str, list[str]]:
    """The string values of the secret fields of a JSON request body (at any depth), or of a
    form body (`client_secret=…`), by name.

    Parses the body: for recording only (the key puts the marker in while it parses anyway).
    """
    content_type = _header(headers, b"content-type")
    is_json, is_form = is_json_type(content_type), is_form_type(content_type)
    if not body or not (is_json or is_form):
        return {}
    try:
        decoded = decode_content(body, _header(headers, b"content-encoding"))
    except ValueError:  # too large to decode
        return {}
    if decoded is None:
        return {}
    if is_form:
        return form_secret_values(decoded, rules.is_form_secret)
    found: dict[str, list[str]] = {}

    def collect(pairs: list[tuple[str, object]]) -> list[tuple[str, object]]:
        for name, value in pairs:
            if type(value) is str and rules.is_secret_field(name):
                found.setdefault(name, []).append(value)
        return pairs

    try:
        json.loads(decoded, object_pairs_hook=collect)
    except (ValueError, RecursionError):
        return {}
    return found


def redact_body_fields(body: bytes, headers: Headers, fields: Fields) -> bytes:
    """A request body with the values of its secret `fields` (body_secret_fields) replaced
    in place, whatever their length (scrub only takes values of MIN_SCRUB_LENGTH and more).
    The bytes as sent are kept otherwise; an encoded body is returned as it is (the
    recorder decodes it first, mitm/flows.py). `headers` without a content type: JSON (a
    WebSocket message's)."""
    if not fields or _header(headers, b"content-encoding").strip().lower() not in ("", "identity"):
        return body
    if is_form_type(_header(headers, b"content-type")):
        return redact_form(body, lambda name: name in fields)
    for name in fields:
        written = json.dumps(name, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")
        value = re.compile(rb'("' + re.escape(written) + rb'"\s*:\s*)"(?:[^"\\]|\\.)*"', re.S)
        body = value.sub(rb'\1"' + REDACTED_BYTES + b'"', body)
    return body


_ESCAPE = re.compile("%[0-9A-F]{2}")
#: Distinct secrets whose forms are remembered: a client sends the same key every time, and
#: every miss names its URL (held in memory only, as the requests themselves are).
KNOWN_SECRETS = 256


@functools.lru_cache(maxsize=KNOWN_SECRETS)
def secret_forms(secret: bytes) -> frozenset[bytes]:
    """A secret as it may be echoed: raw, percent-encoded (either case), base64, JSON-escaped."""
    forms = {secret}
    for escaped in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        forms.add(escaped.encode())
        forms.add(_ESCAPE.sub(lambda m: m[0].lower(), escaped).encode())
    forms.add(base64.b64encode(secret).rstrip(b"="))  # unpadded: a prefix of the padded form
    forms.add(base64.urlsafe_b64encode(secret).rstrip(b"="))
    forms.add(json.dumps(secret.decode("utf-8", "surrogateescape"))[1:-1].encode())
    return frozenset(forms)


def _field_bytes(value: str) -> set[bytes]:
    """A body field's value as bytes: UTF-8 with a JSON string's lone surrogates kept, and
    with a form value's undecodable bytes (lone surrogates too) as they were sent."""
    found = {value.encode("utf-8", "surrogatepass")}
    if _UNDECODABLE.search(value):
        with contextlib.suppress(UnicodeEncodeError):  # other surrogates: JSON's only
            found.add(value.encode("utf-8", "surrogateescape"))
    return found


def secret_values(
    headers: Headers, query: str, rules: KeyRules, fields: Fields | None = None
) -> list[bytes]:
    """Every secret the request carried (in its headers, query and the JSON or form body
    `fields` of body_secret_fields), in the forms it might be echoed in, longest first."""
    found: set[bytes] = set()
    for name, value in headers:
        lower = name.decode("latin-1").lower()
        if rules.is_secret(lower):
            found.add(value.strip())
            _scheme, _, token = value.strip().partition(b" ")
            if token:
                found.add(token.strip())
        elif lower == "sec-websocket-protocol":  # `openai-insecure-api-key.sk-…` (SPEC §13)
            for protocol in value.split(b","):
                kind, dot, secret = protocol.strip().partition(b".")
                if dot and secret and rules.is_secret(kind.decode("latin-1").lower()):
                    found.add(secret)
    for param, param_value in _query_pairs(query):
        if rules.is_secret_param(param):
            found.add(param_value.encode("utf-8", "surrogateescape"))  # the bytes that were sent
    for values in (fields or {}).values():
        for text in values:
            found.update(_field_bytes(text))
    forms = frozenset().union(*(secret_forms(v) for v in found if len(v) >= MIN_SCRUB_LENGTH))
    return sorted(forms, key=len, reverse=True)


def scrub(data: bytes, secrets: list[bytes]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, REDACTED_BYTES)
    return data


def scrub_headers(headers: Headers, secrets: list[bytes]) -> Headers:
    return [(name, scrub(value, secrets)) for name, value in headers]
