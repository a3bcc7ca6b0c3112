"""The Keyer: a live request's key, remembered so that the same request is not keyed twice."""

from __future__ import annotations

import dataclasses

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from provider_cache.core import keys
from provider_cache.mitm import flows
from provider_cache.mitm.keying import OVERSIZED_BODY, Keyer, parts

RULES = keys.KeyRules()
BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'


def request(body: bytes = BODY, *headers: tuple[str, str]) -> http.Request:
    req = tflow.treq(
        host="api.openai.com",
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/v1/chat/completions?x=1",
        content=body,
    )
    req.headers = http.Headers(
        [(b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in headers)]
    )
    return req


def expected_key(req: http.Request, body: bytes | None = None) -> str:
    found = flows.request_parts(req)
    if body is not None:
        found = dataclasses.replace(found, body=body)
    return keys.key_for(found, RULES)[0]


def test_first_call_computes_the_key_and_its_normalised_form() -> None:
    keyer = Keyer(RULES)
    req = request()
    key, normalized = keyer.key(req, storable=True)
    assert key == expected_key(req)
    assert normalized == keys.normalize(flows.request_parts(req), RULES)


def test_second_call_returns_the_remembered_key_without_normalising() -> None:
    keyer = Keyer(RULES)
    first, _ = keyer.key(request(), storable=True)
    assert keyer.key(request(), storable=True) == (first, None)  # an equal request, a new object
    assert len(keyer.recent) == 1


def test_a_request_differing_only_in_ignored_headers_gets_the_remembered_key() -> None:
    keyer = Keyer(RULES)
    first, _ = keyer.key(request(), storable=True)
    assert keyer.key(request(BODY, ("traceparent", "00-abc-01")), storable=True) == (first, None)


def test_a_different_request_is_keyed_afresh() -> None:
    keyer = Keyer(RULES)
    first, _ = keyer.key(request(), storable=True)
    other = request(BODY.replace(b"hi", b"bye"))
    key, normalized = keyer.key(other, storable=True)
    assert key != first and key == expected_key(other)
    assert normalized is not None
    assert len(keyer.recent) == 2


def test_a_changed_request_is_not_served_the_key_remembered_for_it() -> None:
    """mitmproxy lets addons edit a request in place: the memo must follow the content."""
    keyer = Keyer(RULES)
    req = request()
    first, _ = keyer.key(req, storable=True)
    req.headers["anthropic-version"] = "2023-06-01"
    key, normalized = keyer.key(req, storable=True)
    assert key != first and key == expected_key(req)
    assert normalized is not None


def test_an_oversized_body_is_keyed_with_the_placeholder() -> None:
    keyer = Keyer(RULES)
    req = request(b'{"big": "' + b"x" * 1000 + b'"}')
    key, normalized = keyer.key(req, storable=False)
    assert key == expected_key(req, body=OVERSIZED_BODY)
    assert key != expected_key(req)
    assert normalized is not None
    assert normalized["body"] == keys.normalize(parts(req, False), RULES)["body"]


def test_an_oversized_body_is_never_remembered() -> None:
    keyer = Keyer(RULES)
    req = request()
    first = keyer.key(req, storable=False)
    assert len(keyer.recent) == 0
    again = keyer.key(req, storable=False)
    assert again[0] == first[0] and again[1] is not None  # computed again
    # and it does not stand in for the same request keyed in full
    key, normalized = keyer.key(req, storable=True)
    assert key == expected_key(req) != first[0]
    assert normalized is not None


def test_oversized_requests_with_different_bodies_share_one_key() -> None:
    """Their bodies are not looked at: such requests are never stored, only counted."""
    keyer = Keyer(RULES)
    assert keyer.key(request(b"a" * 50), False)[0] == keyer.key(request(b"b" * 60), False)[0]


@pytest.mark.parametrize("storable", [True, False])
def test_normalized_equals_keys_normalize_of_the_parts(storable: bool) -> None:
    keyer = Keyer(RULES)
    req = request(BODY, ("authorization", "Bearer sk-test"))
    found = flows.request_parts(req)
    if not storable:
        found = dataclasses.replace(found, body=OVERSIZED_BODY)
    assert keyer.normalized(req, storable) == keys.normalize(found, RULES)


def test_normalized_is_what_a_remembered_key_was_computed_from() -> None:
    """A repeated miss shows the same normalised request the first one did."""
    keyer = Keyer(RULES)
    req = request()
    _, first = keyer.key(req, storable=True)
    assert keyer.key(req, storable=True)[1] is None
    assert keyer.normalized(req, storable=True) == first


def test_parts_replaces_only_the_body_of_an_oversized_request() -> None:
    req = request()
    assert parts(req, True) == flows.request_parts(req)
    assert parts(req, False) == dataclasses.replace(flows.request_parts(req), body=OVERSIZED_BODY)


def test_keys_follow_the_keyers_rules() -> None:
    """New rules, a new Keyer: a header ignored by one set of rules is keyed by another."""
    plain, traced = request(), request(BODY, ("x-run-id", "42"))
    assert Keyer(RULES).key(plain, True)[0] != Keyer(RULES).key(traced, True)[0]
    ignoring = keys.KeyRules.with_extra(ignored=("x-run-id",))
    assert Keyer(ignoring).key(plain, True)[0] == Keyer(ignoring).key(traced, True)[0]
