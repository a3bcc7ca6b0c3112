"""The key against the headers real SDKs send (tests/core/sdk_headers.py, issue 13): a
recording survives an SDK upgrade, another Python and another OS, and only what is asked
(the semantic headers, the URL, the body) changes the key."""

from __future__ import annotations

import dataclasses
import json

import pytest

from provider_cache.core import diagnose, redact
from provider_cache.core.keys import KeyRules, RequestParts, key_for, normalize
from provider_cache.core.records import StoredRequest
from tests.core import sdk_headers
from tests.core.sdk_headers import (
    ALL,
    ANTHROPIC_0,
    ANTHROPIC_2,
    COHERE_5,
    COHERE_7,
    CREDENTIAL_HEADERS,
    SAME_CALL,
    SEMANTIC_HEADERS,
)

RULES = KeyRules()


def key(request: RequestParts) -> str:
    return key_for(request, RULES)[0]


def with_header(request: RequestParts, name: str, value: str | None) -> RequestParts:
    """`name` (lower case) set to `value` wherever it is sent, or dropped (None)."""
    return dataclasses.replace(
        request,
        headers=tuple(
            (n, v if n.lower() != name else value)
            for n, v in request.headers
            if n.lower() != name or value is not None
        ),
    )


def stored(request: RequestParts) -> StoredRequest:
    """The request as the cache stores it: every secret redacted."""
    headers = [(n.encode(), v.encode()) for n, v in request.headers]
    query = f"?{request.query}" if request.query else ""
    return StoredRequest(
        method=request.method,
        url=f"{request.scheme}://{request.host}{request.path}{query}",
        headers=redact.redact_headers(headers, RULES),
        body=request.body,
    )


# --- the same call, elsewhere ----------------------------------------------------------------


@pytest.mark.parametrize(("label", "one", "other"), SAME_CALL, ids=[c[0] for c in SAME_CALL])
def test_the_same_call_from_another_version_python_or_os_shares_a_key(
    label: str, one: RequestParts, other: RequestParts
) -> None:
    assert one.headers != other.headers
    assert key(one) == key(other), diagnose.differences(
        normalize(one, RULES), normalize(other, RULES)
    )


@pytest.mark.parametrize("sdk", ALL)
def test_a_call_sent_twice_shares_a_key(sdk: str) -> None:
    """azure-core's fresh x-ms-client-request-id, boto3's invocation id and SigV4 date."""
    request = ALL[sdk]
    again = dataclasses.replace(
        request,
        headers=tuple(
            (n, f"{v}-again") for n, v in request.headers if n.lower() not in SEMANTIC_HEADERS
        )
        + tuple((n, v) for n, v in request.headers if n.lower() in SEMANTIC_HEADERS),
    )
    assert key(again) == key(request)


# --- only the semantic headers count ---------------------------------------------------------


@pytest.mark.parametrize("sdk", ALL)
def test_of_the_headers_an_sdk_sends_only_the_semantic_ones_change_the_key(sdk: str) -> None:
    request = ALL[sdk]
    changes_key = {
        name.lower(): key(with_header(request, name.lower(), f"{value}-other")) != key(request)
        for name, value in request.headers
    }
    assert {name for name, changes in changes_key.items() if changes} == (
        SEMANTIC_HEADERS & changes_key.keys()
    )


@pytest.mark.parametrize("sdk", ALL)
def test_what_is_asked_changes_the_key(sdk: str) -> None:
    request = ALL[sdk]
    body = json.loads(request.body)
    changes = [
        with_header(request, "content-type", "text/plain"),
        dataclasses.replace(request, headers=(*request.headers, ("anthropic-beta", "x-2025"))),
        dataclasses.replace(request, headers=(*request.headers, ("openai-beta", "assistants=v2"))),
        dataclasses.replace(request, path=request.path + "x"),
        dataclasses.replace(request, query=request.query + "&stream=true"),
        dataclasses.replace(request, body=request.body.replace(b'"hi"', b'"hello"')),
    ]
    if "model" in body:  # elsewhere it is in the path
        other_model = json.dumps({**body, "model": f"{body['model']}-2"}).encode()
        changes.append(dataclasses.replace(request, body=other_model))
    if any(n.lower() == "anthropic-version" for n, _ in request.headers):
        changes.append(with_header(request, "anthropic-version", "2024-10-22"))
    keys = {key(changed) for changed in changes}
    assert key(request) not in keys
    assert len(keys) == len(changes)


# --- credentials by presence, whichever header carries them ----------------------------------


@pytest.mark.parametrize("sdk", ALL)
def test_a_credential_counts_by_its_presence_only(sdk: str) -> None:
    request = ALL[sdk]
    credentials = [n.lower() for n, _ in request.headers if n.lower() in CREDENTIAL_HEADERS]
    assert credentials, "every SDK in the table sent a credential"
    without = request
    for name in credentials:
        without = with_header(without, name, None)
    assert key(without) != key(request)
    for carrier in ("authorization", "x-api-key", "api-key", "x-goog-api-key"):
        moved = dataclasses.replace(without, headers=(*without.headers, (carrier.title(), "k")))
        assert key(moved) == key(request), carrier
    both = dataclasses.replace(request, headers=(*request.headers, ("api-key", "another")))
    assert key(both) == key(request)


def test_anthropic_0_and_2_differ_only_in_their_default_api_version() -> None:
    """0.x sent X-Api-Key and 2.x sends Authorization: the same credential, not a difference."""
    found = diagnose.differences(normalize(ANTHROPIC_0, RULES), normalize(ANTHROPIC_2, RULES))
    assert found == ["header anthropic-version: 2023-06-01 → 2026-10-21"]
    pinned = with_header(ANTHROPIC_2, "anthropic-version", "2023-06-01")
    assert key(pinned) == key(ANTHROPIC_0)


#: Keys taken before issue 13's rules: requests that carry their credential in Authorization
#: and none of the headers it ignores keep their recordings (KEY_VERSION unchanged).
KEYS_BEFORE_ISSUE_13 = {
    "openai 3.57.0": "3798e1b391f10d6f04d793fddf8ebd471222a1b57427663051e77161a18b9c5a",
    "anthropic 2.15.0": "623240c1a2992313dd5f0239c195fa1d4f38f516991619454b19bf3faaeea2ce",
    "boto3 1.44.8": "f06210b91c560639aac0491793cd6dd95472a30b5f6f40b69e8aa61f4937695d",
    "litellm 1.110.2 openai/": "4ba9859000fa4ca093fcd5a1ee2d6d034df2a8dfd7fcba9b9c805e8ee5b0980f",
}


@pytest.mark.parametrize("sdk", KEYS_BEFORE_ISSUE_13)
def test_a_request_the_new_rules_do_not_touch_keeps_its_key(sdk: str) -> None:
    assert key(ALL[sdk]) == KEYS_BEFORE_ISSUE_13[sdk]


# --- the miss diagnosis ----------------------------------------------------------------------


def test_the_miss_diagnosis_names_the_real_difference_not_the_sdk_headers() -> None:
    """A cohere 5 recording, cohere 7 on another machine asking for another model."""
    upgraded = dataclasses.replace(COHERE_7, body=COHERE_7.body.replace(b"command-r", b"command-a"))
    found = diagnose.closest(normalize(upgraded, RULES), [("k5", stored(COHERE_5))], RULES)
    assert found == {
        "key": "k5",
        "differences": ['body $.model: "command-r" → "command-a"'],
        "more": 0,
    }


def test_a_recording_keyed_under_older_rules_is_named_so() -> None:
    """A request that normalises as the missed one today was recorded when its key was made
    otherwise (an older provider-cache, other cache_ignore_headers): say so, not nothing."""
    found = diagnose.closest(normalize(COHERE_7, RULES), [("old", stored(COHERE_5))], RULES)
    assert found is not None
    assert found["differences"] == [diagnose.SAME_REQUEST_OTHER_RULES]


def test_the_missed_requests_own_recording_is_no_explanation() -> None:
    """In record mode a miss is recorded before the background pass looks for its closest."""
    missed = normalize(COHERE_7, RULES)
    recordings = [(key(COHERE_7), stored(COHERE_7)), ("other", stored(COHERE_5))]
    assert diagnose.closest(missed, recordings, RULES)["key"] == "other"
    assert diagnose.closest(missed, recordings[:1], RULES) is None


def test_the_table_covers_every_sdk_family() -> None:
    families = (
        "openai",
        "anthropic",
        "google-genai",
        "boto3",
        "azure-ai-inference",
        "cohere",
        "litellm",
    )
    assert all(any(name.startswith(f) for name in ALL) for f in families)
    assert len(sdk_headers.SAME_CALL) >= len(families)
