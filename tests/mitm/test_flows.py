"""flows.fingerprint: what a remembered key is filed under (addon/recent.py).

Its one promise: under the same rules, requests with equal fingerprints have equal keys,
so a key remembered under a fingerprint is the key computing it again would give.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import tflow

from provider_cache.core import keys
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
