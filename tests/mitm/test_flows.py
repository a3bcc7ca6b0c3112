"""flows.fingerprint: what a remembered key is filed under (addon/recent.py).

Its one promise: under the same rules, requests with equal fingerprints have equal keys,
so a key remembered under a fingerprint is the key computing it again would give.
And flows.make_entry: what a recording keeps of secrets and account identifiers.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import tflow

from provider_cache.core import keys, records
from provider_cache.core.diagnose import stored_parts
from provider_cache.mitm import flows

RULES = keys.KeyRules()


def request(
    body: bytes = b'{"model": "m", "messages": []}',
    headers: tuple[tuple[bytes, bytes], ...] = (),
    path: bytes = b"/v1/chat/completions",
    host: str = "api.openai.com",
    method: bytes = b"POST",
) -> http.Request:
    req = tflow.treq(host=host, port=443, scheme=b"https", method=method, path=path, content=body)
    req.headers = http.Headers(((b"content-type", b"application/json"), *headers))
    return req


def key_of(req: http.Request) -> str:
    return keys.key_for(flows.request_parts(req), RULES)[0]


def test_ignored_headers_do_not_change_the_fingerprint():
    plain = request()
    traced = request(headers=((b"Traceparent", b"00-abc-01"), (b"User-Agent", b"OpenAI/Python 9")))
    assert flows.fingerprint(plain, RULES) == flows.fingerprint(traced, RULES)
    assert key_of(plain) == key_of(traced)


@pytest.mark.parametrize(
    "other",
    [
        request(body=b'{"model": "n", "messages": []}'),
        request(headers=((b"anthropic-version", b"2023-06-01"),)),
        request(headers=((b"authorization", b"Bearer sk-other"),)),
        request(path=b"/v1/chat/completions?stream=true"),
        request(path=b"/v1/embeddings"),
        request(host="api.anthropic.com"),
        request(method=b"PUT"),
    ],
    ids=["body", "header", "secret value", "query", "path", "host", "method"],
)
def test_every_part_the_key_reads_changes_the_fingerprint(other: http.Request):
    assert flows.fingerprint(other, RULES) != flows.fingerprint(request(), RULES)


NAMES = st.sampled_from(
    [b"content-type", b"x-stainless-os", b"user-agent", b"anthropic-version", b"X-Custom", b"date"]
)
VALUES = st.sampled_from([b"a", b"b", b"application/json", b" a", b"\xff"])
BODIES = st.sampled_from([b'{"a": 1, "b": 2}', b'{"b": 2, "a": 1}', b'{"a":1}', b"\xff", b""])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(NAMES, VALUES), max_size=4),
    st.lists(st.tuples(NAMES, VALUES), max_size=4),
    BODIES,
    BODIES,
)
def test_equal_fingerprints_have_equal_keys(headers_a, headers_b, body_a, body_b):
    a = request(body_a, tuple(headers_a))
    b = request(body_b, tuple(headers_b))
    if flows.fingerprint(a, RULES) == flows.fingerprint(b, RULES):
        assert key_of(a) == key_of(b)


IGNORED = st.sampled_from([b"x-stainless-os", b"User-Agent", b"date", b"traceparent"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=4), st.data())
def test_adding_ignored_headers_keeps_fingerprint_and_key(headers, data):
    extra = data.draw(st.lists(st.tuples(IGNORED, VALUES), max_size=3))
    mixed = list(headers)
    for pair in extra:
        mixed.insert(data.draw(st.integers(0, len(mixed))), pair)
    a, b = request(headers=tuple(headers)), request(headers=tuple(mixed))
    assert flows.fingerprint(a, RULES) == flows.fingerprint(b, RULES)
    assert key_of(a) == key_of(b)


# --- make_entry: what a recording keeps of secrets and account identifiers (issue 12) ---------

KEEP_ACCOUNT = keys.KeyRules.with_extra(keep_account=True)
GATEWAY_KEY = "cfut_PLANTEDgatewayKey0000000000000011"
BODY_KEY = "sk-PLANTEDbodyKey000000000000000012"
ORG = "org-PLANTEDorganization0013"
PROJECT = "proj_PLANTEDproject0014"
ANTHROPIC_ORG = "6f1a0c2e-PLANTED-0015"


def recorded(
    req: http.Request,
    body: bytes = b'{"ok": true}',
    headers: tuple[tuple[bytes, bytes], ...] = (),
    rules: keys.KeyRules = RULES,
) -> tuple[records.Entry, bytes]:
    response = http.Response.make(200, body, {"content-type": "application/json"})
    for name, value in headers:
        response.headers.add(name.decode(), value.decode())
    entry = flows.make_entry(tflow.tflow(req=req, resp=response), "k" * 64, rules, None)
    assert entry is not None
    return entry, records.pack(entry)


def test_gateway_and_custom_auth_headers_are_redacted_in_the_recording():
    req = request(
        headers=(
            (b"cf-aig-authorization", f"Bearer {GATEWAY_KEY}".encode()),
            (b"x-portkey-api-key", GATEWAY_KEY.encode() + b"-pk"),
            (b"helicone-auth", GATEWAY_KEY.encode() + b"-hc"),
        )
    )
    entry, packed = recorded(req, body=f'{{"echo": "{GATEWAY_KEY}"}}'.encode())
    assert GATEWAY_KEY.encode() not in packed
    for name in (b"cf-aig-authorization", b"x-portkey-api-key", b"helicone-auth"):
        assert (name, b"<redacted>") in entry.request.headers


def test_set_cookie_is_never_stored():
    cookies = ((b"set-cookie", b"__cf_bm=PLANTEDcookie; path=/"), (b"set-cookie", b"_cfuvid=x"))
    entry, packed = recorded(request(), headers=cookies)
    assert b"PLANTEDcookie" not in packed
    assert all(name != b"set-cookie" for name, _ in entry.response.headers)
    assert all(name != b"set-cookie" for name, _ in flows.Replay.of(entry).headers)


def account_flow_parts():
    req = request(
        headers=((b"OpenAI-Organization", ORG.encode()), (b"OpenAI-Project", PROJECT.encode()))
    )
    answer = (
        (b"openai-organization", ORG.encode()),
        (b"openai-project", PROJECT.encode()),
        (b"anthropic-organization-id", ANTHROPIC_ORG.encode()),
        (b"openai-processing-ms", b"12"),
    )
    return req, answer


def test_account_headers_are_redacted_in_stored_requests_and_responses():
    req, answer = account_flow_parts()
    entry, packed = recorded(req, headers=answer)
    for value in (ORG, PROJECT, ANTHROPIC_ORG):
        assert value.encode() not in packed
    assert (b"OpenAI-Organization", b"<redacted>") in entry.request.headers
    assert (b"openai-organization", b"<redacted>") in entry.response.headers
    assert (b"anthropic-organization-id", b"<redacted>") in entry.response.headers
    assert (b"openai-processing-ms", b"12") in entry.response.headers


def test_account_headers_are_kept_when_the_option_says_so():
    req, answer = account_flow_parts()
    entry, _ = recorded(req, headers=answer, rules=KEEP_ACCOUNT)
    assert (b"OpenAI-Organization", ORG.encode()) in entry.request.headers
    assert (b"openai-organization", ORG.encode()) in entry.response.headers
    assert (b"anthropic-organization-id", ANTHROPIC_ORG.encode()) in entry.response.headers


def test_a_json_body_secret_field_is_scrubbed_from_the_recording():
    body = json.dumps({"model": "m", "config": {"api_key": BODY_KEY, "password": "hunter2"}})
    entry, packed = recorded(request(body=body.encode()), body=f'{{"got": "{BODY_KEY}"}}'.encode())
    assert BODY_KEY.encode() not in packed and b"hunter2" not in packed
    stored = json.loads(entry.request.body)
    assert stored["config"] == {"api_key": "<redacted>", "password": "<redacted>"}
    assert stored["model"] == "m"
    # the stored request keys as the one sent (the miss diagnosis re-keys stored requests)
    sent = request(body=body.encode())
    assert keys.key_for(stored_parts(entry.request), RULES)[0] == key_of(sent)


def test_signed_url_parameters_and_a_secret_in_the_path_are_not_in_the_stored_url():
    path = (
        f"/v1/files/{GATEWAY_KEY}/content?X-Goog-Signature=PLANTEDsig0016&sig=PLANTEDsig0017"
        f"&token=PLANTEDtoken0018&alt=media"
    ).encode()
    req = request(path=path, headers=((b"x-api-key", GATEWAY_KEY.encode()),), method=b"GET")
    entry, packed = recorded(req)
    for value in (GATEWAY_KEY, "PLANTEDsig0016", "PLANTEDsig0017", "PLANTEDtoken0018"):
        assert value.encode() not in packed
        assert value not in flows.redacted_url(req, RULES)  # what the miss 404 and log name
    assert entry.request.url.endswith("&alt=media")


def test_a_percent_encoded_echo_of_a_query_secret_is_scrubbed():
    credential = "AKIAPLANTED0019/20240101/us-east-1/s3/aws4_request"
    encoded = credential.replace("/", "%2F")
    req = request(path=f"/v1/echo?X-Amz-Credential={encoded}".encode(), method=b"GET")
    echo = f'{{"url": "https://b/o?X-Amz-Credential={encoded}", "raw": "{credential}"}}'
    _, packed = recorded(req, body=echo.encode())
    assert b"AKIAPLANTED0019" not in packed
