"""The closest-recording report: which recording, and exactly what differs."""

from __future__ import annotations

import json

from provider_cache.core import diagnose
from provider_cache.core.diagnose import closest, closest_each, differences, stored_parts
from provider_cache.core.keys import KeyRules, RequestParts, normalize
from provider_cache.core.records import StoredRequest

RULES = KeyRules()
URL = "https://api.openai.com/v1/chat/completions"


def stored(body: dict, url: str = URL, headers: tuple = ()) -> StoredRequest:
    return StoredRequest(
        method="POST",
        url=url,
        headers=[(b"content-type", b"application/json"), *headers],
        body=json.dumps(body).encode(),
    )


def missed(body: dict, url: str = URL, headers: tuple = ()) -> dict:
    return normalize(stored_parts(stored(body, url, headers)), RULES)


def test_names_the_one_changed_json_field():
    recorded = [("k1", stored({"model": "m", "temperature": 0.2, "messages": ["hi"]}))]
    result = closest(
        missed({"model": "m", "temperature": 0.7, "messages": ["hi"]}), recorded, RULES
    )
    assert result == {"key": "k1", "differences": ["body $.temperature: 0.2 → 0.7"], "more": 0}


def test_prefers_fewest_then_most_similar_differences():
    recorded = [
        ("far", stored({"q": "name three colours", "n": 1})),
        ("near", stored({"q": "translate hello", "n": 1})),
        ("two", stored({"q": "translate goodbye", "n": 2, "x": 1})),
    ]
    result = closest(missed({"q": "translate goodbye", "n": 1}), recorded, RULES)
    assert result["key"] == "near"
    assert result["differences"] == ['body $.q: "translate hello" → "translate goodbye"']


def test_only_the_same_method_host_and_path_compete():
    recorded = [("other-path", stored({"a": 1}, url="https://api.openai.com/v1/embeddings"))]
    assert closest(missed({"a": 1}), recorded, RULES) is None


def test_headers_and_query_differences_are_named():
    old = normalize(
        RequestParts("GET", "https", "h", 443, "/p", "page=1", (("anthropic-version", "1"),), b""),
        RULES,
    )
    new = normalize(
        RequestParts("GET", "https", "h", 443, "/p", "page=2", (("anthropic-version", "2"),), b""),
        RULES,
    )
    assert differences(old, new) == ["query page: 1 → 2", "header anthropic-version: 1 → 2"]


def test_added_and_removed_fields_and_non_json_bodies():
    recorded = [("k", stored({"a": 1}))]
    assert closest(missed({"a": 1, "b": True}), recorded, RULES)["differences"] == [
        "body $.b: (absent) → true"
    ]
    old = normalize(RequestParts("POST", "https", "h", 443, "/p", "", (), b"abc"), RULES)
    new = normalize(RequestParts("POST", "https", "h", 443, "/p", "", (), b"abcd"), RULES)
    assert differences(old, new) == ["body (raw, 3 → 4 bytes)"]


def test_secrets_are_not_differences():
    recorded = [("k", stored({"a": 1}, headers=((b"authorization", b"<redacted>"),)))]
    result = closest(
        missed({"a": 1}, headers=((b"authorization", b"Bearer sk-other"),)), recorded, RULES
    )
    assert result == {"key": "k", "differences": [diagnose.SAME_REQUEST_OTHER_RULES], "more": 0}


def test_one_pass_answers_each_miss_as_closest_would(monkeypatch):
    recorded = [
        ("colours", stored({"q": "name three colours", "n": 1})),
        ("hello", stored({"q": "translate hello", "n": 1})),
        ("embed", stored({"input": "x"}, url="https://api.openai.com/v1/embeddings")),
        (
            "case",
            stored(
                {"q": "translate hello", "n": 1}, url="https://API.openai.com./v1/chat/completions"
            ),
        ),
    ]
    misses = {
        "bye": missed({"q": "translate goodbye", "n": 1}),
        "embed": missed({"input": "y"}, url="https://api.openai.com/v1/embeddings"),
        "nothing": missed({"a": 1}, url="https://api.anthropic.com/v1/messages"),
    }
    normalised = []
    real = diagnose.normalize
    monkeypatch.setattr(diagnose, "normalize", lambda *a: normalised.append(1) or real(*a))
    batch = closest_each(misses, iter(recorded), RULES)
    assert len(normalised) == len(recorded)  # each recording normalised once, not per miss
    assert batch == {name: closest(m, recorded, RULES) for name, m in misses.items()}
    assert batch["bye"]["key"] == "hello" and batch["embed"]["key"] == "embed"
    assert batch["nothing"] is None
