"""Secret removal from everything written down: headers, URLs, bodies (SPEC §3, §4)."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from provider_cache.core.keys import KeyRules
from provider_cache.core.redact import (
    MIN_SCRUB_LENGTH,
    REDACTED_BYTES,
    redact_headers,
    redact_query,
    redact_url,
    scrub,
    scrub_headers,
    secret_values,
)

RULES = KeyRules()

# --- redact_headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        b"authorization",
        b"Authorization",
        b"AUTHORIZATION",
        b"proxy-authorization",
        b"x-api-key",
        b"X-Api-Key",
        b"api-key",
        b"x-goog-api-key",
        b"x-amz-security-token",
        b"cookie",
        b"ocp-apim-subscription-key",
    ],
)
def test_redact_headers_replaces_secret_values(name: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (name, b"sk-secret-value")]
    assert redact_headers(headers, RULES) == [
        (b"content-type", b"application/json"),
        (name, REDACTED_BYTES),
    ]


def test_redact_headers_keeps_order_duplicates_and_other_headers() -> None:
    headers = [
        (b"x-api-key", b"one"),
        (b"accept", b"*/*"),
        (b"X-Api-Key", b"two"),
        (b"user-agent", b"sdk/1.0"),
        (b"x-apikey-hint", b"not-secret"),
    ]
    assert redact_headers(headers, RULES) == [
        (b"x-api-key", REDACTED_BYTES),
        (b"accept", b"*/*"),
        (b"X-Api-Key", REDACTED_BYTES),
        (b"user-agent", b"sdk/1.0"),
        (b"x-apikey-hint", b"not-secret"),
    ]


def test_redact_headers_with_extra_secret_rules() -> None:
    rules = KeyRules.with_extra(secret=("X-Org-Token", "x-vault-*"))
    headers = [(b"x-org-token", b"t1"), (b"X-Vault-Secret", b"t2"), (b"x-org", b"keep")]
    assert redact_headers(headers, rules) == [
        (b"x-org-token", REDACTED_BYTES),
        (b"X-Vault-Secret", REDACTED_BYTES),
        (b"x-org", b"keep"),
    ]
    assert redact_headers(headers, RULES) == headers


def test_redact_headers_handles_non_ascii_names() -> None:
    headers = [(b"x-\xff", b"v"), (b"authorization", b"\xff\xfe")]
    assert redact_headers(headers, RULES) == [(b"x-\xff", b"v"), (b"authorization", REDACTED_BYTES)]


# --- redact_query / redact_url ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?key=AIzaSyA",
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent"
            "?key=%3Credacted%3E",
        ),
        (
            "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01&api-key=abc",
            "https://x.openai.azure.com/openai/deployments/d"
            "?api-version=2024-06-01&api-key=%3Credacted%3E",
        ),
        (
            "https://h.com/p?KEY=abc&Api-Key=def",
            "https://h.com/p?KEY=%3Credacted%3E&Api-Key=%3Credacted%3E",
        ),
        (
            "https://h.com/p?api_key=1&apikey=2&access_token=3",
            "https://h.com/p?api_key=%3Credacted%3E&apikey=%3Credacted%3E&access_token=%3Credacted%3E",
        ),
        ("https://user:pass@h.com/p", "https://h.com/p"),
        ("https://user:p@ss@h.com:8443/p", "https://h.com:8443/p"),
        ("https://token@h.com/p?alt=sse", "https://h.com/p?alt=sse"),
        ("https://user:pass@h.com/p?key=k#frag", "https://h.com/p?key=%3Credacted%3E#frag"),
        # nothing secret: the URL comes back exactly as given
        ("https://h.com/p?x=a%20b&y=1&y=2&z", "https://h.com/p?x=a%20b&y=1&y=2&z"),
        ("https://h.com/p?keys=1&monkey=2", "https://h.com/p?keys=1&monkey=2"),
        ("http://h.com:8080/", "http://h.com:8080/"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url, RULES) == expected


def test_redact_url_removes_every_secret_value() -> None:
    url = "https://alice:hunter2pass@h.com/v1?key=AIzaSECRET1&q=1&api-key=AZSECRET2&key=AIzaSECRET3"
    redacted = redact_url(url, RULES)
    for secret in ("alice", "hunter2pass", "AIzaSECRET1", "AZSECRET2", "AIzaSECRET3"):
        assert secret not in redacted
    assert "q=1" in redacted


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("a=1&b=2", "a=1&b=2"),
        ("key=s", "key=%3Credacted%3E"),
        ("a=1&key=s&b=", "a=1&key=%3Credacted%3E&b="),
        ("key=", "key=%3Credacted%3E"),
    ],
)
def test_redact_query(query: str, expected: str) -> None:
    assert redact_query(query, RULES) == expected


# --- secret_values ---------------------------------------------------------------------------


def test_secret_values_splits_bearer_tokens_longest_first() -> None:
    found = secret_values([(b"Authorization", b"Bearer sk-proj-abcdefgh1234")], "", RULES)
    assert found == [b"Bearer sk-proj-abcdefgh1234", b"sk-proj-abcdefgh1234"]


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ([(b"x-api-key", b"  sk-ant-api03-xyz  ")], "", [b"sk-ant-api03-xyz"]),
        ([(b"api-key", b"azurekey0123")], "", [b"azurekey0123"]),
        ([(b"X-Goog-Api-Key", b"AIzaSy012345")], "", [b"AIzaSy012345"]),
        (
            [(b"authorization", b"Basic  dXNlcjpwYXNz")],
            "",
            [b"Basic  dXNlcjpwYXNz", b"dXNlcjpwYXNz"],
        ),
        ([], "key=AIzaSyQUERY1&alt=sse", [b"AIzaSyQUERY1"]),
        ([], "api-key=azure%2Bkey%3D1", [b"azure+key=1"]),
        ([], "alt=longnonsecretvalue", []),
        ([(b"user-agent", b"a-long-non-secret-value")], "", []),
    ],
)
def test_secret_values(
    headers: list[tuple[bytes, bytes]], query: str, expected: list[bytes]
) -> None:
    assert secret_values(headers, query, RULES) == expected


def test_secret_values_drops_short_values() -> None:
    short = b"x" * (MIN_SCRUB_LENGTH - 1)
    exact = b"y" * MIN_SCRUB_LENGTH
    found = secret_values(
        [(b"x-api-key", short), (b"api-key", exact), (b"authorization", b"Bearer " + short)],
        f"key={short.decode()}",
        RULES,
    )
    assert found == [b"Bearer " + short, exact]


def test_secret_values_are_deduplicated_and_sorted_longest_first() -> None:
    found = secret_values(
        [
            (b"x-api-key", b"aaaaaaaaaa"),
            (b"api-key", b"aaaaaaaaaa"),
            (b"cookie", b"bbbbbbbbbbbbbbbb"),
        ],
        "key=ccccccccccccc",
        RULES,
    )
    assert found == [b"bbbbbbbbbbbbbbbb", b"ccccccccccccc", b"aaaaaaaaaa"]


def test_secret_values_with_extra_secret_header() -> None:
    rules = KeyRules.with_extra(secret=("x-org-token",))
    headers = [(b"X-Org-Token", b"org-token-123")]
    assert secret_values(headers, "", rules) == [b"org-token-123"]
    assert secret_values(headers, "", RULES) == []


# --- scrub -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "secrets", "expected"),
    [
        (b"no secrets here", [b"sk-12345678"], b"no secrets here"),
        (b'{"key":"sk-12345678"}', [b"sk-12345678"], b'{"key":"<redacted>"}'),
        (b"sk-12345678 and sk-12345678", [b"sk-12345678"], b"<redacted> and <redacted>"),
        (
            b"Bearer sk-12345678 / sk-12345678",
            [b"Bearer sk-12345678", b"sk-12345678"],
            b"<redacted> / <redacted>",
        ),
        (b"", [b"sk-12345678"], b""),
        (b"anything", [], b"anything"),
    ],
)
def test_scrub(data: bytes, secrets: list[bytes], expected: bytes) -> None:
    assert scrub(data, secrets) == expected


def test_scrub_headers_scrubs_values_only() -> None:
    secret = b"sk-12345678"
    headers = [(b"x-echo", b"got " + secret), (b"sk-12345678", b"name-is-not-scrubbed")]
    assert scrub_headers(headers, [secret]) == [
        (b"x-echo", b"got <redacted>"),
        (b"sk-12345678", b"name-is-not-scrubbed"),
    ]


def test_request_secrets_end_to_end_never_survive_scrubbing() -> None:
    headers = [
        (b"authorization", b"Bearer sk-proj-0123456789"),
        (b"x-goog-api-key", b"AIzaSy-9876543"),
    ]
    secrets = secret_values(headers, "key=AIzaSy-query-1", RULES)
    echoed = b'{"echo":"Bearer sk-proj-0123456789","k":"AIzaSy-9876543","q":"AIzaSy-query-1"}'
    scrubbed = scrub(echoed, secrets)
    for value in (b"sk-proj-0123456789", b"AIzaSy-9876543", b"AIzaSy-query-1"):
        assert value not in scrubbed
    assert scrubbed.count(REDACTED_BYTES) == 3


secret_text = st.binary(min_size=MIN_SCRUB_LENGTH, max_size=20).map(
    lambda b: bytes(string.ascii_letters.encode()[x % 52] for x in b)
)


@settings(max_examples=200, deadline=None)
@given(
    secrets=st.lists(secret_text, min_size=1, max_size=4),
    pieces=st.lists(st.binary(max_size=12), max_size=6),
    picks=st.lists(st.integers(0, 3), max_size=6),
)
def test_property_scrub_leaves_no_secret(
    secrets: list[bytes], pieces: list[bytes], picks: list[int]
) -> None:
    assume(REDACTED_BYTES.strip(b"<>") not in secrets)  # the marker itself cannot go away
    data = b""
    for i, piece in enumerate(pieces):
        data += piece
        if i < len(picks):
            data += secrets[picks[i] % len(secrets)]
    ordered = sorted(set(secrets), key=len, reverse=True)
    scrubbed = scrub(data, ordered)
    for secret in secrets:
        assert secret not in scrubbed


# --- non-UTF-8 queries -----------------------------------------------------------------------
# mitmproxy hands the path over decoded from UTF-8 with surrogateescape, so a query carrying
# bytes that are not UTF-8 arrives with lone surrogates (\udc80-\udcff).

WIRE_QUERY = b"alt=\xfe&key=\xffsecret-123".decode("utf-8", "surrogateescape")


def test_secret_values_of_non_utf8_query_does_not_raise() -> None:
    found = secret_values([], WIRE_QUERY, RULES)
    assert any(b"secret-123" in value for value in found)


def test_redact_url_of_non_utf8_query_does_not_raise() -> None:
    redacted = redact_url("https://h.com/p?" + WIRE_QUERY, RULES)
    assert "secret-123" not in redacted
    assert "alt=" in redacted


def test_percent_encoded_non_utf8_query_secret_is_scrubbed_byte_exactly() -> None:
    # ?key=%FFsecret-123 sends the bytes b"\xffsecret-123"; an echo of them must not survive.
    secrets = secret_values([], "key=%FFsecret-123", RULES)
    assert b"\xffsecret-123" not in scrub(b'{"echo":"\xffsecret-123"}', secrets)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(["", "key=", "alt=sse&api-key=", "x&key=1&y="]),
    wire=st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
def test_property_query_redaction_never_raises(prefix: str, wire: str) -> None:
    query = prefix + wire
    secret_values([], query, RULES)
    redact_url("https://h.com/p?" + query, RULES)
