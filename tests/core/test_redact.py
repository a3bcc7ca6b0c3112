"""Secret removal from everything written down: headers, URLs, bodies (SPEC §3, §4)."""

from __future__ import annotations

import gzip
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from provider_cache.core.keys import KeyRules
from provider_cache.core.redact import (
    MIN_SCRUB_LENGTH,
    REDACTED_BYTES,
    body_secret_fields,
    redact_account_headers,
    redact_body_fields,
    redact_headers,
    redact_query,
    redact_url,
    scrub,
    scrub_headers,
    secret_forms,
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
        (b"x-api-hint", b"not-secret"),
    ]
    assert redact_headers(headers, RULES) == [
        (b"x-api-key", REDACTED_BYTES),
        (b"accept", b"*/*"),
        (b"X-Api-Key", REDACTED_BYTES),
        (b"user-agent", b"sdk/1.0"),
        (b"x-api-hint", b"not-secret"),
    ]


def test_redact_headers_with_extra_secret_rules() -> None:
    rules = KeyRules.with_extra(secret=("X-Org-Tenant", "x-vault-*"))
    headers = [(b"x-org-tenant", b"t1"), (b"X-Vault-Id", b"t2"), (b"x-org", b"keep")]
    assert redact_headers(headers, rules) == [
        (b"x-org-tenant", REDACTED_BYTES),
        (b"X-Vault-Id", REDACTED_BYTES),
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


def forms_of(*raw: bytes) -> set[bytes]:
    """What secret_values yields for these values: each in every form it may be echoed in."""
    return set().union(*(secret_forms(value) for value in raw))


def assert_secrets(found: list[bytes], *raw: bytes) -> None:
    assert set(found) == forms_of(*raw)
    assert len(found) == len(set(found))
    assert found == sorted(found, key=len, reverse=True)


def test_secret_values_splits_bearer_tokens_longest_first() -> None:
    found = secret_values([(b"Authorization", b"Bearer sk-proj-abcdefgh1234")], "", RULES)
    assert_secrets(found, b"Bearer sk-proj-abcdefgh1234", b"sk-proj-abcdefgh1234")
    assert found.index(b"Bearer sk-proj-abcdefgh1234") < found.index(b"sk-proj-abcdefgh1234")


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
    assert_secrets(secret_values(headers, query, RULES), *expected)


def test_secret_values_drops_short_values() -> None:
    short = b"x" * (MIN_SCRUB_LENGTH - 1)
    exact = b"y" * MIN_SCRUB_LENGTH
    found = secret_values(
        [(b"x-api-key", short), (b"api-key", exact), (b"authorization", b"Bearer " + short)],
        f"key={short.decode()}",
        RULES,
    )
    assert_secrets(found, b"Bearer " + short, exact)


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
    assert_secrets(found, b"bbbbbbbbbbbbbbbb", b"ccccccccccccc", b"aaaaaaaaaa")


def test_secret_values_with_extra_secret_header() -> None:
    rules = KeyRules.with_extra(secret=("x-org-tenant",))
    headers = [(b"X-Org-Tenant", b"org-tenant-123")]
    assert_secrets(secret_values(headers, "", rules), b"org-tenant-123")
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


# --- issue 12: secrets beyond the built-in names ---------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"cf-aig-authorization", b"x-portkey-api-key", b"Helicone-Auth", b"x-team-token"],
)
def test_redact_headers_redacts_gateway_and_custom_auth_headers(name: bytes) -> None:
    headers = [(name, b"Bearer gw-secret-123456"), (b"x-goog-api-client", b"genai/1.0")]
    assert redact_headers(headers, RULES) == [
        (name, REDACTED_BYTES),
        (b"x-goog-api-client", b"genai/1.0"),
    ]
    assert_secrets(
        secret_values(headers, "", RULES), b"Bearer gw-secret-123456", b"gw-secret-123456"
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "sv=2024&se=2030&sp=r&sig=AbCdEf%2B123%3D",
            "sv=2024&se=2030&sp=r&sig=%3Credacted%3E",
        ),
        (
            "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam%2F2024"
            "&X-Goog-Signature=0a1b2c",
            "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=%3Credacted%3E"
            "&X-Goog-Signature=%3Credacted%3E",
        ),
        (
            "X-Amz-Credential=AKIA%2F2024%2Fus-east-1&X-Amz-Date=2024&X-Amz-Signature=ff",
            "X-Amz-Credential=%3Credacted%3E&X-Amz-Date=2024&X-Amz-Signature=%3Credacted%3E",
        ),
        ("token=abc&alt=sse", "token=%3Credacted%3E&alt=sse"),
        ("pageSize=5&pageToken=Cg5n", "pageSize=5&pageToken=Cg5n"),
    ],
)
def test_redact_query_redacts_signed_url_parameters(query: str, expected: str) -> None:
    assert redact_query(query, RULES) == expected


def test_redact_url_scrubs_a_known_secret_repeated_in_the_path() -> None:
    url = "https://h.com/v1/keys/sk-path-secret-99/usage?key=sk-path-secret-99&alt=sse"
    secrets = secret_values([], "key=sk-path-secret-99&alt=sse", RULES)
    redacted = redact_url(url, RULES, secrets)
    assert "sk-path-secret-99" not in redacted
    assert redacted == "https://h.com/v1/keys/%3Credacted%3E/usage?key=%3Credacted%3E&alt=sse"
    # percent-encoded in the path, as a client sends a value with / or + in it
    slashy = secret_values([(b"x-api-key", b"sk/slash+plus=1")], "", RULES)
    assert "sk%2Fslash" not in redact_url("https://h.com/a/sk%2Fslash%2Bplus%3D1/b", RULES, slashy)
    assert redact_url(url, RULES) == (
        "https://h.com/v1/keys/sk-path-secret-99/usage?key=%3Credacted%3E&alt=sse"
    )


def test_secret_values_yield_percent_encoded_and_base64_forms() -> None:
    import base64
    from urllib.parse import quote, quote_plus

    raw = b"AKIAEXAMPLE/20240101/us-east-1/s3/aws4_request"
    found = secret_values([], "X-Amz-Credential=" + quote(raw, safe=""), RULES)
    for form in (
        raw,
        quote(raw, safe="").encode(),
        quote(raw).encode(),
        quote_plus(raw).encode(),
        quote(raw, safe="").replace("%2F", "%2f").encode(),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
    ):
        assert form in found, form
    assert found == sorted(found, key=len, reverse=True)


def test_scrub_removes_a_percent_encoded_or_base64_echo_of_a_secret() -> None:
    import base64

    query = "X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
    secrets = secret_values([(b"x-api-key", b"sk-ant-b64-secret")], query, RULES)
    echoed = (
        b'{"url":"https://b.s3/o?X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2F'
        b'aws4_request","form":"AKIAEXAMPLE%2f20240101%2fus-east-1%2fs3%2faws4_request",'
        b'"b64":"' + base64.b64encode(b"sk-ant-b64-secret") + b'"}'
    )
    scrubbed = scrub(echoed, secrets)
    assert b"AKIAEXAMPLE" not in scrubbed and b"c2stYW50LWI2NC1zZWNyZXQ" not in scrubbed
    assert scrubbed.count(REDACTED_BYTES) == 3


JSON_HEADERS = [(b"content-type", b"application/json")]


def test_body_secret_fields_at_any_depth() -> None:
    body = b'{"model":"m","config":[{"api_key":"sk-body-secret-1"}],"apiKey":"sk-body-secret-2"}'
    fields = body_secret_fields(body, JSON_HEADERS, RULES)
    assert fields == {"api_key": ["sk-body-secret-1"], "apiKey": ["sk-body-secret-2"]}
    found = secret_values(JSON_HEADERS, "", RULES, fields)
    assert b"sk-body-secret-1" in found and b"sk-body-secret-2" in found
    assert body_secret_fields(b'{"max_tokens":"sk-not-a-secret"}', JSON_HEADERS, RULES) == {}
    assert body_secret_fields(b'{"password":{"type":"string"}}', JSON_HEADERS, RULES) == {}
    assert body_secret_fields(b"not json", JSON_HEADERS, RULES) == {}
    plain = [(b"content-type", b"text/plain")]
    assert body_secret_fields(b'{"api_key":"sk-body-secret-1"}', plain, RULES) == {}
    gzipped = [*JSON_HEADERS, (b"Content-Encoding", b"gzip")]
    compressed = gzip.compress(b'{"api_key":"sk-body-secret-1"}')
    assert body_secret_fields(compressed, gzipped, RULES) == {"api_key": ["sk-body-secret-1"]}


def test_redact_body_fields_replaces_secret_values_of_any_length_in_place() -> None:
    body = b'{"model": "m", "auth": {"password" : "hunter2"}, "token":"t\\"1", "n": "hunter2"}'
    redacted = redact_body_fields(body, JSON_HEADERS, body_secret_fields(body, JSON_HEADERS, RULES))
    assert redacted == (
        b'{"model": "m", "auth": {"password" : "<redacted>"}, "token":"<redacted>", "n": "hunter2"}'
    )
    assert redact_body_fields(b'{"model":"m"}', JSON_HEADERS, {}) == b'{"model":"m"}'
    gzipped = [*JSON_HEADERS, (b"content-encoding", b"gzip")]
    assert redact_body_fields(b"\x1f\x8b", gzipped, {"token": ["x"]}) == b"\x1f\x8b"


def test_account_headers_are_redacted_and_scrubbed_unless_kept() -> None:
    keep = KeyRules.with_extra(keep_account=True)
    request = [(b"OpenAI-Organization", b"org-planted-123456"), (b"OpenAI-Project", b"proj_1")]
    assert redact_headers(request, RULES) == [
        (b"OpenAI-Organization", REDACTED_BYTES),
        (b"OpenAI-Project", REDACTED_BYTES),
    ]
    assert b"org-planted-123456" in secret_values(request, "", RULES)
    assert redact_headers(request, keep) == request
    assert secret_values(request, "", keep) == []
    response = [
        (b"openai-organization", b"user-abc123"),
        (b"anthropic-organization-id", b"2f7e-uuid"),
        (b"x-ratelimit-remaining-tokens", b"99"),
    ]
    assert redact_account_headers(response, RULES) == [
        (b"openai-organization", REDACTED_BYTES),
        (b"anthropic-organization-id", REDACTED_BYTES),
        (b"x-ratelimit-remaining-tokens", b"99"),
    ]
    assert redact_account_headers(response, keep) == response


def test_a_key_sent_as_a_websocket_subprotocol_is_a_secret() -> None:
    """Browsers cannot set headers: OpenAI Realtime takes the key as a subprotocol (SPEC §13)."""
    header = (b"Sec-WebSocket-Protocol", b"realtime, openai-insecure-api-key.sk-proj-sub12345")
    assert_secrets(secret_values([header], "", RULES), b"sk-proj-sub12345")
    plain = (b"sec-websocket-protocol", b"realtime, chat.v2-longer-name")
    assert secret_values([plain], "", RULES) == []


FORM_HEADERS = [(b"content-type", b"application/x-www-form-urlencoded")]


def test_a_form_bodys_secret_fields_are_found_and_redacted_in_place() -> None:
    body = b"grant_type=client_credentials&client_secret=s3cr3t%2Bvalue-0001&api_key=short"
    fields = body_secret_fields(body, FORM_HEADERS, RULES)
    assert fields == {"client_secret": ["s3cr3t+value-0001"], "api_key": ["short"]}
    redacted = redact_body_fields(body, FORM_HEADERS, fields)
    assert redacted == (
        b"grant_type=client_credentials&client_secret=%3Credacted%3E&api_key=%3Credacted%3E"
    )
    echoed = b'{"echo": "s3cr3t%2Bvalue-0001", "raw": "s3cr3t+value-0001"}'
    secrets = secret_values([], "", RULES, fields)
    assert scrub(echoed, secrets) == b'{"echo": "<redacted>", "raw": "<redacted>"}'
    assert body_secret_fields(b"grant_type=x&client_id=y", FORM_HEADERS, RULES) == {}


@pytest.mark.parametrize(
    "value",
    [
        "sécret-value-0001".encode(),  # UTF-8, sent unescaped
        b"s\xffcret-value-0001",  # not UTF-8 at all
    ],
)
def test_an_echo_of_a_form_secret_is_scrubbed_in_the_bytes_it_was_sent_in(value: bytes) -> None:
    body = b"grant_type=client_credentials&client_secret=" + value
    fields = body_secret_fields(body, FORM_HEADERS, RULES)
    echoed = b'{"echo": "' + value + b'"}'
    assert scrub(echoed, secret_values([], "", RULES, fields)) == b'{"echo": "<redacted>"}'
    assert redact_body_fields(body, FORM_HEADERS, fields).endswith(b"client_secret=%3Credacted%3E")


def test_a_compressed_form_bodys_secret_fields_are_found() -> None:
    """The recorder then decodes it to redact them (mitm/flows.py), the key too."""
    headers = [*FORM_HEADERS, (b"content-encoding", b"gzip")]
    body = gzip.compress(b"client_secret=s3cr3t-value-0001&scope=all")
    assert body_secret_fields(body, headers, RULES) == {"client_secret": ["s3cr3t-value-0001"]}
