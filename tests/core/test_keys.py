"""The cache key (SPEC §3): what it ignores, what it is sensitive to, and that it never raises."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
import string
import sys
import zlib
from collections.abc import Callable
from email import policy as email_policy
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import brotli
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import provider_cache.core.keys
from provider_cache.core import userrules
from provider_cache.core.keys import (
    CREDENTIAL_HEADER,
    IGNORED_HEADERS,
    REDACTED,
    RULES_APPLIED,
    SECRET_HEADERS,
    KeyRules,
    RequestParts,
    cache_key,
    key_for,
    normalize,
)

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

RULES = KeyRules()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CHAT_BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0}'

BASE = RequestParts(
    method="POST",
    scheme="https",
    host="api.openai.com",
    port=443,
    path="/v1/chat/completions",
    query="",
    headers=(
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("openai-beta", "assistants=v2"),
    ),
    body=CHAT_BODY,
)


def key(req: RequestParts, rules: KeyRules = RULES) -> str:
    return key_for(req, rules)[0]


def with_headers(req: RequestParts, *extra: tuple[str, str]) -> RequestParts:
    return dataclasses.replace(req, headers=req.headers + extra)


def json_req(body: bytes, content_type: str = "application/json") -> RequestParts:
    return dataclasses.replace(BASE, headers=(("content-type", content_type),), body=body)


# --- shape and determinism -------------------------------------------------------------------


def test_key_is_64_lowercase_hex_and_deterministic() -> None:
    first = key(BASE)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert all(key(BASE) == first for _ in range(5))
    assert key(dataclasses.replace(BASE)) == first


def test_key_is_stable_across_processes_and_versions() -> None:
    # A recording made today must hit tomorrow, on another machine. If this value changes on
    # purpose, KEY_VERSION must be bumped (old recordings are then misses) and this updated.
    assert key(BASE) == "de02fb433f0e9a38ebf3e59eb32950ad36086d696dd9051ecfe3f2de499490ee"


def test_key_version_is_part_of_the_hashed_material(monkeypatch: pytest.MonkeyPatch) -> None:
    normalized = normalize(BASE, RULES)
    before = cache_key(normalized)
    monkeypatch.setattr(
        provider_cache.core.keys, "KEY_VERSION", provider_cache.core.keys.KEY_VERSION + 1
    )
    after = cache_key(normalized)
    assert after != before
    assert key(BASE) == after


def test_key_for_returns_the_key_of_its_normalized_form() -> None:
    k, normalized = key_for(BASE, RULES)
    assert k == cache_key(normalized)
    assert normalized["method"] == "POST"
    assert normalized["host"] == "api.openai.com"
    assert normalized["body_kind"] == "json"


# --- ignored headers -------------------------------------------------------------------------

#: Every header SPEC §3 lists as ignored, plus x-stainless-* variants sent by the OpenAI and
#: Anthropic SDKs, in the case they are sent in.
SPEC_IGNORED = (
    "User-Agent",
    "X-Stainless-Lang",
    "X-Stainless-Package-Version",
    "X-Stainless-OS",
    "X-Stainless-Arch",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "x-stainless-async",
    "x-stainless-retry-count",
    "x-stainless-read-timeout",
    "x-stainless-timeout",
    "X-STAINLESS-HELPER-METHOD",
    "Accept-Encoding",
    "Content-Length",
    "Connection",
    "Date",
    "traceparent",
    "tracestate",
    "X-Request-Id",
    "Idempotency-Key",
    "X-Amz-Date",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "X-Amz-User-Agent",
    "X-Amz-Content-Sha256",
)
BUILTIN_IGNORED = tuple(sorted({h for h in IGNORED_HEADERS if "*" not in h} | set(SPEC_IGNORED)))


@pytest.mark.parametrize("name", BUILTIN_IGNORED)
def test_ignored_header_does_not_change_the_key(name: str) -> None:
    base = key(BASE)
    assert key(with_headers(BASE, (name, "value-one"))) == base
    assert key(with_headers(BASE, (name, "value-two"), (name, "value-three"))) == base
    assert key(with_headers(BASE, (name.upper(), "x"))) == base


def test_a_header_that_is_not_ignored_changes_the_key() -> None:
    assert key(with_headers(BASE, ("x-custom", "1"))) != key(BASE)
    assert key(with_headers(BASE, ("x-stainlessish", "1"))) != key(BASE)


def test_sdk_volatile_headers_together_do_not_change_the_key() -> None:
    laptop = with_headers(
        BASE,
        ("User-Agent", "OpenAI/Python 1.40.0"),
        ("X-Stainless-OS", "MacOS"),
        ("X-Stainless-Retry-Count", "0"),
        ("x-request-id", "req_1"),
        ("Content-Length", "81"),
    )
    ci = with_headers(
        BASE,
        ("user-agent", "OpenAI/Python 1.52.2"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-retry-count", "2"),
        ("x-stainless-read-timeout", "600"),
        ("traceparent", "00-abc-def-01"),
    )
    assert key(laptop) == key(ci)


#: Headers of SDK families the fixture table (tests/core/sdk_headers.py) has no capture of:
#: the rules ignore them by family (name patterns), not one by one.
VOLATILE_BY_FAMILY = (
    # client-made request, correlation and trace ids
    "x-ms-client-request-id",
    "x-client-request-id",
    "request-id",
    "X-Amzn-Trace-Id",
    "x-correlation-id",
    "X-B3-TraceId",
    "b3",
    "sentry-trace",
    "baggage",
    "x-cloud-trace-context",
    "x-datadog-trace-id",
    "uber-trace-id",
    "x-idempotency-key",
    "x-ms-date",
    "x-goog-date",
    # SDK, runtime and platform identification
    "x-goog-api-client",
    "X-Fern-Language",
    "X-Fern-SDK-Name",
    "X-Fern-SDK-Version",
    "X-Fern-Runtime",
    "X-Fern-Runtime-Version",
    "X-Fern-Platform",
    "x-ms-useragent",
    "x-goog-user-agent",
    "x-sdk-version",
)
#: Headers that say what is asked, though their names look like the families above.
SEMANTIC_LOOK_ALIKES = (
    "anthropic-beta",
    "openai-beta",
    "x-amzn-bedrock-trace",  # ENABLED: the answer carries a guardrail trace
    "x-amzn-bedrock-guardrailidentifier",
    "x-ms-model-mesh-model-name",  # which Azure deployment answers
    "azureml-model-deployment",
    "extra-parameters",  # azure-ai-inference: pass-through or drop
    "x-goog-user-project",
    "x-goog-request-params",
    "x-title",
    "http-referer",
    "x-stainlessish",
    "x-fernish",
)


@pytest.mark.parametrize("name", VOLATILE_BY_FAMILY)
def test_a_volatile_header_of_a_family_does_not_change_the_key(name: str) -> None:
    assert key(with_headers(BASE, (name, "0af7651916cd43dd8448eb211c80319c"))) == key(BASE)


@pytest.mark.parametrize("name", SEMANTIC_LOOK_ALIKES)
def test_a_semantic_header_like_a_volatile_family_changes_the_key(name: str) -> None:
    one, two = with_headers(BASE, (name, "one")), with_headers(BASE, (name, "two"))
    assert len({key(BASE), key(one), key(two)}) == 3


def test_with_extra_ignores_more_headers_by_name_and_glob() -> None:
    rules = KeyRules.with_extra(ignored=("X-Session-Id", "x-trace-*"))
    tagged = with_headers(BASE, ("x-session-id", "s1"), ("X-Trace-Span", "7"))
    assert key(tagged, rules) == key(BASE, rules)
    assert key(tagged, RULES) != key(BASE, RULES)
    # the built-in ones are still ignored
    assert key(with_headers(BASE, ("user-agent", "x")), rules) == key(BASE, rules)
    # and other headers still count
    assert key(with_headers(BASE, ("x-other", "1")), rules) != key(BASE, rules)


def test_with_extra_secret_headers_count_by_presence_only() -> None:
    rules = KeyRules.with_extra(secret=("X-My-Tenant",))
    a = with_headers(BASE, ("x-my-tenant", "token-aaaaaaaa"))
    b = with_headers(BASE, ("X-My-Tenant", "token-bbbbbbbb"))
    assert key(a, rules) == key(b, rules)
    assert key(a, rules) != key(BASE, rules)
    assert key(a, RULES) != key(b, RULES)
    assert "token-aaaaaaaa" not in repr(normalize(a, rules))


# --- header order and case -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        (("Accept", "application/json"), ("Content-Type", "application/json")),
        (("content-type", "application/json"), ("accept", "application/json")),
        (("CONTENT-TYPE", "application/json"), ("ACCEPT", "application/json")),
        (("content-type", "  application/json "), ("accept", "application/json\t")),
    ],
)
def test_header_order_name_case_and_value_padding_do_not_matter(
    headers: tuple[tuple[str, str], ...],
) -> None:
    reference = (("accept", "application/json"), ("content-type", "application/json"))
    assert key(dataclasses.replace(BASE, headers=headers)) == key(
        dataclasses.replace(BASE, headers=reference)
    )


def test_header_value_case_and_duplicates_matter() -> None:
    one = with_headers(BASE, ("x-custom", "a"))
    assert key(with_headers(BASE, ("x-custom", "A"))) != key(one)
    assert key(with_headers(BASE, ("x-custom", "a"), ("x-custom", "a"))) != key(one)
    # the order of repeated values of one header is kept
    assert key(with_headers(BASE, ("x-custom", "a"), ("x-custom", "b"))) != key(
        with_headers(BASE, ("x-custom", "b"), ("x-custom", "a"))
    )


# --- sensitivity -----------------------------------------------------------------------------


def _set_header(req: RequestParts, name: str, value: str) -> RequestParts:
    return dataclasses.replace(
        req, headers=tuple((n, value if n == name else v) for n, v in req.headers)
    )


SENSITIVE: list[tuple[str, Callable[[RequestParts], RequestParts]]] = [
    ("method", lambda r: dataclasses.replace(r, method="PUT")),
    ("scheme", lambda r: dataclasses.replace(r, scheme="http")),
    ("host", lambda r: dataclasses.replace(r, host="api.anthropic.com")),
    ("port", lambda r: dataclasses.replace(r, port=8443)),
    ("path", lambda r: dataclasses.replace(r, path="/v1/completions")),
    ("path-trailing-slash", lambda r: dataclasses.replace(r, path="/v1/chat/completions/")),
    ("query-added", lambda r: dataclasses.replace(r, query="stream=true")),
    ("body-value", lambda r: dataclasses.replace(r, body=CHAT_BODY.replace(b"hi", b"ho"))),
    ("body-number-1.0", lambda r: dataclasses.replace(r, body=CHAT_BODY.replace(b":0}", b":0.0}"))),
    ("anthropic-version", lambda r: _set_header(r, "anthropic-version", "2024-01-01")),
    ("openai-beta", lambda r: _set_header(r, "openai-beta", "assistants=v1")),
    ("accept", lambda r: _set_header(r, "accept", "text/event-stream")),
    ("content-type", lambda r: _set_header(r, "content-type", "text/plain")),
]


@pytest.mark.parametrize(("label", "change"), SENSITIVE, ids=[s[0] for s in SENSITIVE])
def test_key_is_sensitive_to(label: str, change: Callable[[RequestParts], RequestParts]) -> None:
    changed = change(BASE)
    assert changed != BASE, label
    assert key(changed) != key(BASE)


def test_all_sensitive_changes_give_distinct_keys() -> None:
    keys = {key(change(BASE)) for _, change in SENSITIVE} | {key(BASE)}
    assert len(keys) == len(SENSITIVE) + 1


@pytest.mark.parametrize("host", ["API.OPENAI.COM", "Api.OpenAI.com", "api.openai.com."])
def test_host_is_case_insensitive_and_trailing_dot_free(host: str) -> None:
    assert key(dataclasses.replace(BASE, host=host)) == key(BASE)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("a=1&b=2", "b=2&a=1", True),
        ("a=1&b=2&c=3", "c=3&a=1&b=2", True),
        ("x=%41", "x=A", True),
        ("x=a+b", "x=a%20b", True),
        ("a=1&b=2", "a=1&b=3", False),
        ("a=1", "b=1", False),
        ("a=1", "a=1&a=1", False),
        ("a=1", "", False),
        ("api-version=2024-02-01", "api-version=2024-06-01", False),
    ],
)
def test_query_parameters_are_sorted_but_values_count(a: str, b: str, same: bool) -> None:
    ka = key(dataclasses.replace(BASE, query=a))
    kb = key(dataclasses.replace(BASE, query=b))
    assert (ka == kb) is same


def test_undecodable_percent_escapes_in_query_values_are_distinct() -> None:
    # %FF and %FE are different bytes asking for different things; they must not share a key.
    a = dataclasses.replace(BASE, query="cursor=%FF")
    b = dataclasses.replace(BASE, query="cursor=%FE")
    assert key(a) != key(b)


# --- JSON bodies -----------------------------------------------------------------------------

NESTED = {
    "model": "claude-3-5-sonnet",
    "max_tokens": 10,
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "héllo ☃ 😀", "cache": None}]},
        {"role": "assistant", "content": "ok", "meta": {"z": [1, 2, {"b": True, "a": False}]}},
    ],
    "metadata": {"user_id": "u", "tags": []},
}


@pytest.mark.parametrize(
    "dump",
    [
        lambda v: json.dumps(v),
        lambda v: json.dumps(v, sort_keys=True),
        lambda v: json.dumps(v, indent=4),
        lambda v: json.dumps(v, indent="\t", sort_keys=True),
        lambda v: json.dumps(v, separators=(",", ":")),
        lambda v: json.dumps(v, separators=(" , ", " : ")),
        lambda v: json.dumps(v, ensure_ascii=False),
        lambda v: "\r\n  " + json.dumps(v, indent=1) + " \n\n",
    ],
)
def test_json_key_order_white_space_and_escapes_do_not_matter(
    dump: Callable[[object], str],
) -> None:
    reversed_order = _reorder(NESTED, random.Random(7))
    reference = key(json_req(json.dumps(NESTED).encode()))
    assert key(json_req(dump(NESTED).encode())) == reference
    assert key(json_req(dump(reversed_order).encode())) == reference


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"a":"\\u00e9"}', '{"a":"é"}'.encode()),
        (b'{"a":"\\/"}', b'{"a":"/"}'),
        (b'{"\\u0061":1}', b'{"a":1}'),
        (b'{"a":"\\ud83d\\ude00"}', '{"a":"😀"}'.encode()),
    ],
)
def test_equivalent_json_string_escapes_share_a_key(a: bytes, b: bytes) -> None:
    assert key(json_req(a)) == key(json_req(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"n":1}', b'{"n":1.0}'),
        (b'{"n":100}', b'{"n":1e2}'),
        (b'{"n":1e2}', b'{"n":1E2}'),
        (b'{"n":0}', b'{"n":-0}'),
        (b'{"n":0.1}', b'{"n":0.10}'),
        (b'{"n":12345678901234567890}', b'{"n":12345678901234567891}'),
        (b'{"a":1,"a":2}', b'{"a":2,"a":1}'),
        (b'{"a":1}', b'{"a":1,"a":1}'),
        (b"[1,2]", b"[2,1]"),
        (b'{"a":"x"}', b'{"a":"X"}'),
        (b'{"a":null}', b"{}"),
        (b'{"a":true}', b'{"a":"true"}'),
    ],
)
def test_json_differences_that_matter_change_the_key(a: bytes, b: bytes) -> None:
    assert key(json_req(a)) != key(json_req(b))


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.api+json"],
)
def test_json_content_types_are_canonicalised(content_type: str) -> None:
    assert key(json_req(b'{ "b": 1, "a": 2 }', content_type)) == key(
        json_req(b'{"a":2,"b":1}', content_type)
    )


def test_non_json_bodies_are_keyed_by_their_bytes() -> None:
    assert key(json_req(b'{ "b": 1, "a": 2 }', "text/plain")) != key(
        json_req(b'{"a":2,"b":1}', "text/plain")
    )
    no_type = dataclasses.replace(BASE, headers=())
    assert key(dataclasses.replace(no_type, body=b"a b")) != key(
        dataclasses.replace(no_type, body=b"a  b")
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"not json",
        b'{"a":1,}',
        b"\xff\xfe\x00",
        b"",
        b'"\\ud800"',  # lone surrogate: valid JSON, not encodable as UTF-8
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=[
        "open",
        "text",
        "trailing-comma",
        "binary",
        "empty",
        "surrogate",
        "deep",
        "deep-ok",
        "deep-obj",
    ],
)
def test_invalid_or_too_deep_json_is_keyed_by_raw_bytes(body: bytes) -> None:
    k, normalized = key_for(json_req(body), RULES)
    assert re.fullmatch(r"[0-9a-f]{64}", k)
    assert normalized["body_kind"] == "raw"
    assert normalized["body"] == body
    assert key(json_req(body + b" ")) != k


def test_key_of_deep_json_does_not_depend_on_the_callers_stack_depth() -> None:
    # The same request must get the same key whether the hook runs shallow or deep in a stack
    # (record and replay go through different call paths).
    req = json_req(b"[" * 300 + b"]" * 300)

    def at_depth(n: int) -> tuple[str, dict]:
        return key_for(req, RULES) if n == 0 else at_depth(n - 1)

    shallow, deep = at_depth(0), at_depth(600)
    assert shallow[1]["body_kind"] == "json"
    assert deep[0] == shallow[0]


# --- multipart bodies ------------------------------------------------------------------------

PARTS: list[tuple[str, str | None, str | None, bytes]] = [
    ("purpose", None, None, b"fine-tune"),
    ("file", "train.jsonl", "application/octet-stream", b'{"x": 1}\n\x00\xff binary\r\n'),
]


def multipart(
    boundary: str,
    parts: list[tuple[str, str | None, str | None, bytes]] = PARTS,
    quote: bool = False,
) -> RequestParts:
    """A multipart/form-data body built by hand."""
    b = boundary.encode()
    body = b""
    for name, filename, ctype, payload in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += b"--" + b + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n"
        if ctype is not None:
            body += b"Content-Type: " + ctype.encode() + b"\r\n"
        body += b"\r\n" + payload + b"\r\n"
    body += b"--" + b + b"--\r\n"
    param = f'"{boundary}"' if quote else boundary
    headers = (("content-type", f"multipart/form-data; boundary={param}"),)
    return dataclasses.replace(BASE, path="/v1/files", headers=headers, body=body)


def email_multipart(boundary: str) -> RequestParts:
    """The same form built by the email package (base64 transfer encoding for the file)."""
    form = MIMEMultipart("form-data", boundary=boundary)
    text = MIMEText("fine-tune", "plain")
    del text["Content-Type"]
    del text["MIME-Version"]
    del text["Content-Transfer-Encoding"]
    text.add_header("Content-Disposition", "form-data", name="purpose")
    form.attach(text)
    data = MIMEApplication(PARTS[1][3], "octet-stream")
    data.add_header("Content-Disposition", "form-data", name="file", filename="train.jsonl")
    form.attach(data)
    raw = form.as_bytes(policy=email_policy.HTTP)
    head, _, body = raw.partition(b"\r\n\r\n")
    content_type = next(
        line.split(b": ", 1)[1].decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-type:")
    )
    return dataclasses.replace(
        BASE, path="/v1/files", headers=(("content-type", content_type),), body=body
    )


BOUNDARIES = [
    "abc123",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "===============8127437273872893248==",
    "17214115c2a12832b72f3c5a3a760f60",
    "x",
]


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_multipart_boundary_does_not_change_the_key(boundary: str) -> None:
    reference = key(multipart("reference-boundary"))
    assert key(multipart(boundary, quote=True)) == reference
    if "=" not in boundary:  # "=" is a tspecial: such a boundary is only valid quoted
        assert key(multipart(boundary)) == reference


@pytest.mark.parametrize("boundary", ["==boundary-one==", "other_boundary_2"])
def test_multipart_built_by_email_package_matches_hand_built(boundary: str) -> None:
    req = email_multipart(boundary)
    assert boundary.encode() in req.body
    assert key(req) == key(multipart("hand-built"))


def test_multipart_from_httpx_with_random_boundaries_share_a_key() -> None:
    def build() -> RequestParts:
        r = httpx.Request(
            "POST",
            "https://api.openai.com/v1/files",
            data={"purpose": "fine-tune"},
            files={"file": ("train.jsonl", PARTS[1][3], "application/octet-stream")},
        )
        return RequestParts(
            method=r.method,
            scheme=r.url.scheme,
            host=r.url.host,
            port=443,
            path=r.url.path,
            query="",
            headers=tuple(r.headers.multi_items()),
            body=r.read(),
        )

    one, two = build(), build()
    assert one.body != two.body  # different random boundaries
    assert key(one) == key(two) == key(multipart("hand-built"))


def _replace_part(index: int, **change: object) -> list[tuple[str, str | None, str | None, bytes]]:
    parts = [list(p) for p in PARTS]
    fields = {"name": 0, "filename": 1, "ctype": 2, "payload": 3}
    for field, value in change.items():
        parts[index][fields[field]] = value
    return [tuple(p) for p in parts]  # type: ignore[misc]


@pytest.mark.parametrize(
    "parts",
    [
        _replace_part(1, payload=b'{"x": 2}\n'),
        _replace_part(1, payload=PARTS[1][3] + b" "),
        _replace_part(1, name="upload"),
        _replace_part(1, filename="test.jsonl"),
        _replace_part(1, filename=None),
        _replace_part(1, ctype="application/jsonl"),
        _replace_part(0, payload=b"assistants"),
        list(reversed(PARTS)),
        PARTS[:1],
        [*PARTS, ("extra", None, None, b"")],
    ],
    ids=[
        "content",
        "content-space",
        "name",
        "filename",
        "no-filename",
        "part-type",
        "first-content",
        "order",
        "dropped-part",
        "extra-part",
    ],
)
def test_multipart_part_changes_change_the_key(
    parts: list[tuple[str, str | None, str | None, bytes]],
) -> None:
    assert key(multipart("same-boundary", parts)) != key(multipart("same-boundary"))


def test_multipart_part_charset_changes_the_key() -> None:
    # The same bytes declared in two charsets are two different texts to the server.
    utf8 = multipart("b", [("prompt", None, "text/plain; charset=utf-8", b"caf\xc3\xa9")])
    latin = multipart("b", [("prompt", None, "text/plain; charset=iso-8859-1", b"caf\xc3\xa9")])
    assert key(utf8) != key(latin)


def test_multipart_non_utf8_part_names_are_distinct() -> None:
    # Raw 8-bit part names are decoded lossily by the email parser (both become U+FFFD).
    def form(name: bytes) -> RequestParts:
        body = b'--b\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\nv\r\n--b--\r\n'
        headers = (("content-type", "multipart/form-data; boundary=b"),)
        return dataclasses.replace(BASE, headers=headers, body=body)

    assert key(form(b"\xff")) != key(form(b"\xfe"))


def test_unparseable_multipart_is_keyed_by_raw_bytes() -> None:
    req = multipart("b")
    truncated = dataclasses.replace(req, body=req.body[:-8])
    k, normalized = key_for(truncated, RULES)
    assert normalized["body_kind"] == "raw"
    assert normalized["body"] == truncated.body
    assert k != key(req)


# --- compressed request bodies ---------------------------------------------------------------


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _zstd_stream(data: bytes) -> bytes:
    """A zstd frame written in streaming mode (no content size in the header)."""
    c = zstd.ZstdCompressor()
    return c.compress(data) + c.flush()


COMPRESSORS: list[tuple[str, str, Callable[[bytes], bytes]]] = [
    ("gzip", "gzip", lambda d: gzip.compress(d, mtime=0)),
    ("gzip-mtime", "gzip", lambda d: gzip.compress(d, compresslevel=1, mtime=1_700_000_000)),
    ("gzip-upper", "GZIP", gzip.compress),
    ("deflate-zlib", "deflate", zlib.compress),
    ("deflate-raw", "deflate", _raw_deflate),
    ("br", "br", brotli.compress),
    ("br-q1", "br", lambda d: brotli.compress(d, quality=1)),
    ("zstd", "zstd", zstd.compress),
    ("zstd-stream", "zstd", _zstd_stream),
    ("identity", "identity", lambda d: d),
]


@pytest.mark.parametrize(
    ("encoding", "compress"), [c[1:] for c in COMPRESSORS], ids=[c[0] for c in COMPRESSORS]
)
def test_compressed_body_keys_as_uncompressed(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    pretty = json.dumps(json.loads(CHAT_BODY), indent=2).encode()
    compressed = with_headers(
        dataclasses.replace(BASE, body=compress(pretty)), ("Content-Encoding", encoding)
    )
    assert key(compressed) == key(BASE)
    text = dataclasses.replace(BASE, headers=(("content-type", "text/plain"),), body=b"x" * 300)
    assert key(
        with_headers(
            dataclasses.replace(text, body=compress(text.body)), ("content-encoding", encoding)
        )
    ) == key(text)


def test_compressed_changed_body_changes_the_key() -> None:
    changed = CHAT_BODY.replace(b"hi", b"ho")
    req = with_headers(
        dataclasses.replace(BASE, body=gzip.compress(changed)), ("content-encoding", "gzip")
    )
    assert key(req) != key(BASE)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "x-unknown", "gzip, br"])
def test_undecodable_compressed_body_is_keyed_raw_with_its_encoding(encoding: str) -> None:
    req = with_headers(dataclasses.replace(BASE, body=b"garbage"), ("content-encoding", encoding))
    k, normalized = key_for(req, RULES)
    assert normalized["body_kind"] == "raw-encoded"
    assert normalized["body"] == b"garbage"
    assert ("content-encoding", encoding) in normalized["headers"]
    assert k != key(dataclasses.replace(BASE, body=b"garbage"))
    assert k != key(
        with_headers(dataclasses.replace(BASE, body=b"garbage2"), ("content-encoding", encoding))
    )


@pytest.mark.parametrize(
    ("encoding", "content_type"),
    [
        ("rot13", "application/json"),
        ("rot_13", "text/plain"),
        ("utf-8", "multipart/form-data; boundary=b"),
        ("latin-1", "multipart/form-data; boundary=b"),
    ],
)
def test_non_http_content_codings_do_not_raise(encoding: str, content_type: str) -> None:
    # Any content-encoding value a client sends must still give a key (SPEC §9: bad input is
    # cacheable); these are Python codec names that are not HTTP content codings.
    req = dataclasses.replace(
        BASE,
        headers=(("content-type", content_type), ("content-encoding", encoding)),
        body=b"--b\r\n\r\nx\r\n--b--\r\n",
    )
    k, normalized = key_for(req, RULES)
    assert re.fullmatch(r"[0-9a-f]{64}", k)
    assert isinstance(normalized["body"], bytes)


# --- secrets ---------------------------------------------------------------------------------

SECRET_CASES = [
    ("Authorization", "Bearer sk-proj-aaaaaaaaaaaaaaaa", "Bearer sk-proj-bbbbbbbbbbbbbbbb"),
    ("authorization", "Basic dXNlcjpwYXNz", "Basic b3RoZXI6b3RoZXI="),
    ("x-api-key", "sk-ant-aaaaaaaaaaaa", "sk-ant-bbbbbbbbbbbb"),
    ("X-Api-Key", "k1", "k2"),
    ("api-key", "azure-key-1111", "azure-key-2222"),
    ("x-goog-api-key", "AIzaSyAAAAAAAAAA", "AIzaSyBBBBBBBBBB"),
    ("x-amz-security-token", "FwoGZXIvYXdzEAAA", "FwoGZXIvYXdzEBBB"),
    ("proxy-authorization", "Basic YWFhOmJiYg==", "Basic Y2NjOmRkZA=="),
]


@pytest.mark.parametrize(("name", "one", "two"), SECRET_CASES)
def test_secret_header_counts_by_presence_not_value(name: str, one: str, two: str) -> None:
    a = with_headers(BASE, (name, one))
    b = with_headers(BASE, (name, two))
    assert key(a) == key(b)
    assert key(a) != key(BASE)
    normalized = repr(normalize(a, RULES))
    assert one not in normalized
    assert one.split()[-1] not in normalized
    assert normalize(a, RULES)["headers"].count((CREDENTIAL_HEADER, REDACTED)) == 1


def test_every_builtin_secret_header_is_keyed_as_one_credential() -> None:
    for name in (h for h in SECRET_HEADERS if "*" not in h and not RULES.is_ignored(h)):
        normalized = normalize(with_headers(BASE, (name.upper(), "secret-value-123")), RULES)
        assert (CREDENTIAL_HEADER, REDACTED) in normalized["headers"]
        assert "secret-value-123" not in repr(normalized)


def test_a_cookie_is_left_out_of_the_key() -> None:
    """Providers set cookies (OpenAI: Cloudflare's __cf_bm), a client keeps them and sends
    them from its second request on; replays set none (they are never stored). Keyed by its
    presence, a cookie would make every replayed request after the first a miss."""
    base = key(BASE)
    assert key(with_headers(BASE, ("Cookie", "__cf_bm=aaaaaaaa"))) == base
    assert RULES.is_secret("cookie")  # and redacted wherever a request is stored


def test_a_credential_counts_the_same_whichever_header_carried_it() -> None:
    """anthropic 0.x sent x-api-key, 2.x Authorization; AzureOpenAI (openai 1.x) and
    azure-core send api-key and Authorization, openai 3.x api-key alone."""
    authorization = key(with_headers(BASE, ("Authorization", "Bearer k")))
    assert key(with_headers(BASE, ("x-api-key", "k"))) == authorization
    assert key(with_headers(BASE, ("api-key", "k"), ("Authorization", "Bearer k"))) == authorization
    assert key(with_headers(BASE, ("X-Goog-Api-Key", "k"))) == authorization
    assert authorization != key(BASE)


def test_an_account_header_is_no_credential() -> None:
    """openai-organization counts by its own presence (it picks whose quota and models)."""
    signed = with_headers(BASE, ("authorization", "Bearer k"))
    assert key(with_headers(signed, ("OpenAI-Organization", "org-1"))) != key(signed)
    assert key(with_headers(BASE, ("openai-organization", "org-1"))) != key(signed)


@pytest.mark.parametrize("param", ["key", "api-key", "KEY", "Api-Key", "api_key", "apikey"])
def test_secret_query_param_counts_by_presence_not_value(param: str) -> None:
    a = dataclasses.replace(BASE, query=f"alt=sse&{param}=AIzaSyAAAAAAAA")
    b = dataclasses.replace(BASE, query=f"{param}=AIzaSyBBBBBBBB&alt=sse")
    absent = dataclasses.replace(BASE, query="alt=sse")
    assert key(a) == key(b)
    assert key(a) != key(absent)
    assert "AIzaSyAAAAAAAA" not in repr(normalize(a, RULES))


def test_non_secret_query_param_value_counts() -> None:
    assert key(dataclasses.replace(BASE, query="keys=1")) != key(
        dataclasses.replace(BASE, query="keys=2")
    )


# --- non-UTF-8 input from the wire -----------------------------------------------------------
# mitmproxy hands header values, paths and queries over as str decoded from UTF-8 with
# surrogateescape, so bytes that are not UTF-8 arrive as lone surrogates (\udc80-\udcff).


@pytest.mark.parametrize(
    "change",
    [
        {"headers": (("x-custom", b"caf\xe9".decode("utf-8", "surrogateescape")),)},
        {"path": b"/v1/caf\xe9".decode("utf-8", "surrogateescape")},
        {"query": b"q=caf\xe9".decode("utf-8", "surrogateescape")},
    ],
    ids=["header-value", "path", "query"],
)
def test_non_utf8_request_parts_do_not_raise(change: dict[str, object]) -> None:
    req = dataclasses.replace(BASE, **change)  # type: ignore[arg-type]
    k = key(req)
    assert re.fullmatch(r"[0-9a-f]{64}", k)
    assert k != key(BASE)


# --- user rules: cache_ignore_json, cache_normalize ------------------------------------------

UUID_1 = "1f0e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b"
UUID_2 = "00c0ffee-0000-4000-8000-000000000042"


def user_rules(ignore_json: tuple[str, ...] = (), normalize: tuple[str, ...] = ()) -> KeyRules:
    return KeyRules.with_extra(user=userrules.parse(ignore_json, normalize))


def chat_json(content: str, **extra: object) -> RequestParts:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return json_req(json.dumps(body).encode())


def test_prompts_differing_in_a_uuid_share_a_key_only_under_the_uuid_rule() -> None:
    first, second = chat_json(f"session {UUID_1}: hi"), chat_json(f"session {UUID_2}: hi")
    assert key(first) != key(second)
    uuid = user_rules(normalize=("uuid",))
    assert key(first, uuid) == key(second, uuid)
    assert key(chat_json("session x: hi"), uuid) != key(first, uuid)


def test_a_run_id_field_is_left_out_of_the_key() -> None:
    first = chat_json("hi", metadata={"run_id": "run-1", "suite": "a"})
    second = chat_json("hi", metadata={"run_id": "run-2", "suite": "a"})
    rules = user_rules(ignore_json=("$.metadata.run_id",))
    assert key(first) != key(second)
    assert key(first, rules) == key(second, rules)
    other_suite = chat_json("hi", metadata={"run_id": "run-1", "suite": "b"})
    assert key(other_suite, rules) != key(first, rules)


def test_a_request_no_rule_touches_keeps_its_key() -> None:
    """Setting a rule must not make the whole cache miss: only what it changes."""
    rules = user_rules(("$.metadata.run_id", "$..tool_call_id"), ("uuid", "iso-timestamp"))
    assert (
        key(BASE, rules)
        == key(BASE)
        == "de02fb433f0e9a38ebf3e59eb32950ad36086d696dd9051ecfe3f2de499490ee"
    )
    assert RULES_APPLIED not in normalize(BASE, rules)
    assert RULES_APPLIED not in normalize(BASE, RULES)


def test_the_rules_that_applied_are_key_material() -> None:
    """`$.a` and `$..a` leave the same body here: the key still tells the rules apart, and a
    request that had the placeholder's text already is no request a rule normalised."""
    req = json_req(b'{"a": 1, "b": 2}')
    shallow, deep = user_rules(("$.a",)), user_rules(("$..a",))
    assert normalize(req, shallow)["body"] == normalize(req, deep)["body"] == b'{"b":2}'
    assert key(req, shallow) != key(req, deep)
    assert key(json_req(b'{"b": 2}')) != key(req, shallow)
    uuid = user_rules(normalize=("uuid",))
    assert key(chat_json("<uuid>"), uuid) != key(chat_json(UUID_1), uuid)


def test_how_many_values_a_rule_changed_is_not_key_material() -> None:
    rules = user_rules(("$.messages[*].id",))
    both = json_req(b'{"messages": [{"id": 1, "c": "a"}, {"id": 2, "c": "b"}]}')
    one = json_req(b'{"messages": [{"id": 7, "c": "a"}, {"c": "b"}]}')
    assert normalize(both, rules)[RULES_APPLIED] == {"cache_ignore_json $.messages[*].id": 2}
    assert key(both, rules) == key(one, rules)


def test_a_key_under_rules_is_stable() -> None:
    # A recording made under a rule must hit tomorrow, under the same rule.
    rules = user_rules(("$.metadata.run_id",), ("uuid",))
    req = chat_json(f"hi {UUID_1}", metadata={"run_id": "r"})
    assert key(req, rules) == "885c2dedcee83ae81fe69098b79366c968ccb55d423bb42834c7c542f03f2d62"


def test_query_values_are_normalised_and_the_path_is_not() -> None:
    rules = user_rules(normalize=("uuid",))
    get = dataclasses.replace(BASE, method="GET", body=b"", query=f"session={UUID_1}&n=1")
    other = dataclasses.replace(get, query=f"n=1&session={UUID_2}")
    assert key(get, rules) == key(other, rules) != key(get)
    assert normalize(get, rules)["query"] == [("n", "1"), ("session", "<uuid>")]
    by_path = dataclasses.replace(get, query="", path=f"/v1/threads/{UUID_1}")
    assert key(by_path, rules) != key(
        dataclasses.replace(by_path, path=f"/v1/threads/{UUID_2}"), rules
    )


def test_a_secret_query_value_is_never_normalised() -> None:
    rules = user_rules(normalize=("(?:redacted)",))
    req = dataclasses.replace(BASE, query="key=sk-123&q=redacted")
    assert normalize(req, rules)["query"] == [("key", REDACTED), ("q", "<normalized>")]


def test_a_text_body_is_normalised_and_binary_bytes_survive() -> None:
    rules = user_rules(normalize=("uuid",))
    text = dataclasses.replace(BASE, headers=(("content-type", "text/plain"),))
    first = dataclasses.replace(text, body=f"id={UUID_1}\xff".encode("latin-1"))
    second = dataclasses.replace(text, body=f"id={UUID_2}\xff".encode("latin-1"))
    assert key(first, rules) == key(second, rules)
    assert normalize(first, rules)["body"] == b"id=<uuid>\xff"


def test_json_paths_need_a_json_body() -> None:
    rules = user_rules(("$.a",))
    raw = dataclasses.replace(BASE, headers=(("content-type", "text/plain"),), body=b'{"a": 1}')
    assert RULES_APPLIED not in normalize(raw, rules)
    assert key(raw, rules) == key(raw)


def test_numbers_stay_exact_and_keys_sorted_under_rules() -> None:
    rules = user_rules(("$.drop",), ("uuid",))
    req = json_req(b'{"z": 1.0, "drop": 1, "a": 1e400, "u": "%s"}' % UUID_1.encode())
    assert normalize(req, rules)["body"] == b'{"a":1e400,"u":"<uuid>","z":1.0}'


@FAST
@given(st.uuids(), st.uuids(), st.text(max_size=30))
def test_property_any_two_uuids_share_a_key_under_the_uuid_rule(first, second, prefix) -> None:
    uuid = user_rules(normalize=("uuid",))
    assert key(chat_json(f"{prefix} {first}"), uuid) == key(chat_json(f"{prefix} {second}"), uuid)


# --- properties ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def _reorder(value: object, rnd: random.Random) -> object:
    """The same JSON value with every object's keys in a shuffled insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reorder(v, rnd) for v in value]
    return value


@FAST
@given(
    value=json_values,
    seed=st.integers(0, 2**32),
    indent=st.none() | st.integers(0, 4) | st.just("\t"),
    separators=st.sampled_from([None, (",", ":"), (", ", ": "), (" ,", " :  ")]),
    ensure_ascii=st.booleans(),
)
def test_property_json_formatting_and_key_order_do_not_change_the_key(
    value: object,
    seed: int,
    indent: int | str | None,
    separators: tuple[str, str] | None,
    ensure_ascii: bool,
) -> None:
    plain = json.dumps(value).encode()
    fancy = json.dumps(
        _reorder(value, random.Random(seed)),
        indent=indent,
        separators=separators,
        ensure_ascii=ensure_ascii,
    ).encode()
    assert key(json_req(fancy)) == key(json_req(plain))


@FAST
@given(value=json_values, other=json_values)
def test_property_different_json_values_have_different_keys(value: object, other: object) -> None:
    if json.dumps(value, sort_keys=True) == json.dumps(other, sort_keys=True):
        return
    assert key(json_req(json.dumps(value).encode())) != key(json_req(json.dumps(other).encode()))


header_names = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
header_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=16)


@FAST
@given(
    headers=st.lists(
        st.tuples(header_names, header_values), max_size=8, unique_by=lambda h: h[0].lower()
    ),
    seed=st.integers(0, 2**32),
)
def test_property_header_order_and_name_case_do_not_change_the_key(
    headers: list[tuple[str, str]], seed: int
) -> None:
    rnd = random.Random(seed)
    shuffled = list(headers)
    rnd.shuffle(shuffled)
    recased = [
        ("".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in n), v) for n, v in shuffled
    ]
    a = dataclasses.replace(BASE, headers=tuple(headers))
    b = dataclasses.replace(BASE, headers=tuple(recased))
    assert key(a) == key(b)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=256),
    content_type=st.sampled_from(
        [
            "",
            "application/json",
            "application/x+json",
            "multipart/form-data; boundary=b",
            'multipart/mixed; boundary="x y"',
            "multipart/form-data",
            "text/plain",
        ]
    )
    | st.text(max_size=40),
    content_encoding=st.sampled_from(
        [
            *("", "gzip", "deflate", "br", "zstd", "identity", "x-gzip", "gzip, br"),
            *("base64", "utf-8", "rot13"),  # Python codec names a client might send
        ]
    )
    | st.text(max_size=12),
)
def test_property_key_for_never_raises_on_any_body(
    body: bytes, content_type: str, content_encoding: str
) -> None:
    headers = (("content-type", content_type), ("content-encoding", content_encoding))
    k, normalized = key_for(dataclasses.replace(BASE, headers=headers, body=body), RULES)
    assert re.fullmatch(r"[0-9a-f]{64}", k)
    assert normalized["body_kind"] in {"raw", "raw-encoded", "json", "multipart"}


def _wire_text(max_size: int) -> st.SearchStrategy[str]:
    """What mitmproxy hands over for arbitrary bytes on the wire."""
    return st.binary(max_size=max_size).map(lambda b: b.decode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(st.tuples(_wire_text(12), _wire_text(24)), max_size=6),
    path=_wire_text(24),
    query=_wire_text(40) | st.text(max_size=40),
    host=st.text(string.ascii_letters + string.digits + ".-", min_size=1, max_size=20),
    port=st.integers(1, 65535),
)
def test_property_key_for_never_raises_on_any_header_path_or_query(
    headers: list[tuple[str, str]], path: str, query: str, host: str, port: int
) -> None:
    req = dataclasses.replace(
        BASE, headers=tuple(headers), path=path, query=query, host=host, port=port
    )
    assert re.fullmatch(r"[0-9a-f]{64}", key(req))


# --- form bodies (application/x-www-form-urlencoded) -----------------------------------------

FORM = "application/x-www-form-urlencoded"


def form_req(body: bytes, content_type: str = FORM) -> RequestParts:
    return json_req(body, content_type)


def test_a_form_bodys_secret_counts_by_presence_and_is_never_in_the_normal_form() -> None:
    """An OAuth token request: a rotated client secret keeps the key, and the normal form
    (which the stats file lists for a miss) never holds it."""
    one = form_req(b"grant_type=client_credentials&client_id=app&client_secret=s3cr3t-0001")
    two = form_req(b"grant_type=client_credentials&client_id=app&client_secret=s3cr3t-0002")
    assert key(one) == key(two)
    normalized = normalize(one, RULES)
    assert b"s3cr3t" not in normalized["body"]
    assert normalized["body"] == (
        b"grant_type=client_credentials&client_id=app&client_secret=%3Credacted%3E"
    )
    assert key(one) != key(
        form_req(b"grant_type=client_credentials&client_id=other&client_secret=x")
    )
    assert key(form_req(b"api_key=k1&prompt=hi")) == key(form_req(b"api_key=k2&prompt=hi"))
    assert key(form_req(b"api_key=k1&prompt=hi")) != key(form_req(b"api_key=k1&prompt=ho"))


def test_a_form_body_without_secrets_keys_as_before() -> None:
    """Its bytes as sent, kind raw: recordings made before form secrets were redacted hit
    (the key pinned is the one the version before computed)."""
    body = b"b=2&a=1&empty=&flag"
    assert normalize(form_req(body), RULES)["body"] == body
    assert normalize(form_req(body), RULES)["body_kind"] == "raw"
    assert key(form_req(body)) == "0944e93f8f0ea420dee807f63a23c3156260a710d5391796c9ba9bd4cb24eb41"


def test_a_compressed_form_body_is_redacted_after_decoding() -> None:
    body = gzip.compress(b"client_secret=s3cr3t-0001&scope=all")
    request = dataclasses.replace(
        BASE, headers=(("content-type", FORM), ("content-encoding", "gzip")), body=body
    )
    assert normalize(request, RULES)["body"] == b"client_secret=%3Credacted%3E&scope=all"


def test_a_body_that_only_looks_like_a_form_is_keyed_as_sent() -> None:
    assert (
        normalize(form_req(b"client_secret=x", "text/plain"), RULES)["body"] == b"client_secret=x"
    )
