"""Which names are secrets (SPEC §3, issue 12): headers, query parameters, JSON fields, and
account identifiers; and that no request without such a name changes its key.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from provider_cache.core.keys import (
    CREDENTIAL_HEADER,
    REDACTED,
    KeyRules,
    RequestParts,
    key_for,
    normalize,
)

RULES = KeyRules()
KEEP_ACCOUNT = KeyRules.with_extra(keep_account=True)

# --- requests without any new kind of secret keep their exact key ---------------------------
# Taken before issue 12's rules were added; issue 13 changed the last four on purpose (their
# credential now counts as one `authorization`, x-goog-api-client and x-ms-client-request-id
# are ignored): rules that only merge requests asking the same thing keep KEY_VERSION (see
# there). Any other change to one of these: bump KEY_VERSION.

OPENAI_CHAT = RequestParts(
    method="POST",
    scheme="https",
    host="api.openai.com",
    port=443,
    path="/v1/chat/completions",
    query="",
    headers=(
        ("Host", "api.openai.com"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Connection", "keep-alive"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", "OpenAI/Python 1.54.0"),
        ("X-Stainless-Lang", "python"),
        ("X-Stainless-Package-Version", "1.54.0"),
        ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Arch", "x64"),
        ("X-Stainless-Runtime", "CPython"),
        ("X-Stainless-Runtime-Version", "3.12.3"),
        ("Authorization", "Bearer sk-proj-aaaaaaaaaaaaaaaaaaaa"),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("Content-Length", "200"),
    ),
    body=(
        b'{"messages":[{"role":"user","content":"count the tokens in: my api key is hidden"}],'
        b'"model":"gpt-4o-mini","max_tokens":64,"max_completion_tokens":64,'
        b'"prompt_cache_key":"user-42","temperature":0,'
        b'"tools":[{"type":"function","function":{"name":"login","parameters":{"type":"object",'
        b'"properties":{"password":{"type":"string"},"token":{"type":"string"},'
        b'"key":{"type":"string"}}}}}],"logit_bias":{"50256":-100}}'
    ),
)
ANTHROPIC_MESSAGES = RequestParts(
    method="POST",
    scheme="https",
    host="api.anthropic.com",
    port=443,
    path="/v1/messages",
    query="beta=true",
    headers=(
        ("host", "api.anthropic.com"),
        ("accept", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "interleaved-thinking-2025-05-14,token-counting-2024-11-01"),
        ("content-type", "application/json"),
        ("x-api-key", "sk-ant-api03-aaaaaaaaaaaaaaaaaaaa"),
        ("user-agent", "Anthropic/Python 0.40.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-timeout", "600"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("idempotency-key", "stainless-python-retry-123"),
    ),
    body=(
        b'{"max_tokens":1024,"model":"claude-sonnet-4","thinking":{"type":"enabled",'
        b'"budget_tokens":512},"messages":[{"role":"user","content":"hi"},'
        b'{"role":"assistant","content":[{"type":"thinking","thinking":"hmm",'
        b'"signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},'
        b'{"type":"tool_use","id":"toolu_1","name":"memory","input":{"key":"colour",'
        b'"value":"blue"}}]},'
        b'{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1",'
        b'"content":"ok"}]}],"metadata":{"user_id":"u-1"}}'
    ),
)
GEMINI_GENERATE = RequestParts(
    method="POST",
    scheme="https",
    host="generativelanguage.googleapis.com",
    port=443,
    path="/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    query="alt=sse",
    headers=(
        ("x-goog-api-key", "AIzaSyAAAAAAAAAAAAAAAAAAAAAAA"),
        ("x-goog-api-client", "google-genai-sdk/1.0.0 gl-python/3.12.3"),
        ("user-agent", "google-genai-sdk/1.0.0"),
        ("content-type", "application/json"),
    ),
    body=(
        b'{"contents":[{"role":"user","parts":[{"text":"hi"}]},{"role":"model","parts":'
        b'[{"text":"hello","thoughtSignature":"CiQBVKhc7oAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}]},'
        b'{"role":"user","parts":[{"text":"again"}]}],'
        b'"generationConfig":{"maxOutputTokens":100,"thinkingConfig":{"thinkingBudget":0}}}'
    ),
)
GEMINI_LIST = RequestParts(
    method="GET",
    scheme="https",
    host="generativelanguage.googleapis.com",
    port=443,
    path="/v1beta/models",
    query="pageSize=50&pageToken=Cg5nZW1pbmktMi41LWZsYXNo&key=AIzaSyBBBBBBBBBBBBBBB",
    headers=(("x-goog-api-client", "genai-js/0.21.0"),),
    body=b"",
)
AZURE_CHAT = RequestParts(
    method="POST",
    scheme="https",
    host="res.openai.azure.com",
    port=443,
    path="/openai/deployments/gpt-4o/chat/completions",
    query="api-version=2024-10-21",
    headers=(
        ("api-key", "azurekey0000000000000"),
        ("content-type", "application/json"),
        ("x-ms-client-request-id", "abc"),
        ("accept", "application/json"),
    ),
    body=b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}',
)

PINNED = {
    "openai-chat": (
        OPENAI_CHAT,
        "bd218871460be9aed922030d5b2ab288379286c35b82e2d2c006a5b6589c3a05",
    ),
    "anthropic-messages": (
        ANTHROPIC_MESSAGES,
        "9002906ecdb5f6805c4f6d003e0361dba2110c6d79273c8c24048e520bb60ec8",
    ),
    "gemini-generate": (
        GEMINI_GENERATE,
        "887a88fd228ceb69695e253c7b55907f2100b930b0a487555ed96c1f70c811ba",
    ),
    "gemini-list": (
        GEMINI_LIST,
        "a8ea073ba94430094027feaefd7cc973b7d964b0606a3e5a0a1637f6a3d8b18d",
    ),
    "azure-chat": (
        AZURE_CHAT,
        "ed4bcbd8088bbd53013af47ad3951c5cc0d80102cb7a223e20b1a44cc34ade19",
    ),
}


@pytest.mark.parametrize("name", PINNED)
def test_a_request_without_new_secret_kinds_keeps_its_exact_key(name: str) -> None:
    request, pinned = PINNED[name]
    assert key_for(request, RULES)[0] == pinned
    assert key_for(request, KEEP_ACCOUNT)[0] == pinned


def test_non_secret_look_alikes_still_count_by_value() -> None:
    """max_tokens, prompt_cache_key, thinking signatures, page tokens, KV tool inputs."""
    variants = [
        (OPENAI_CHAT, b'"max_tokens":64', b'"max_tokens":65'),
        (OPENAI_CHAT, b'"prompt_cache_key":"user-42"', b'"prompt_cache_key":"user-43"'),
        (ANTHROPIC_MESSAGES, b'"signature":"EqQB', b'"signature":"XqQB'),
        (ANTHROPIC_MESSAGES, b'"key":"colour"', b'"key":"flavour"'),
        (GEMINI_GENERATE, b'"thoughtSignature":"CiQB', b'"thoughtSignature":"XiQB'),
    ]
    for request, old, new in variants:
        assert old in request.body
        changed = dataclasses.replace(request, body=request.body.replace(old, new))
        assert key_for(changed, RULES)[0] != key_for(request, RULES)[0], old
    next_page = dataclasses.replace(GEMINI_LIST, query=GEMINI_LIST.query.replace("Cg5n", "Dg5n"))
    assert key_for(next_page, RULES)[0] != key_for(GEMINI_LIST, RULES)[0]


# --- header names ----------------------------------------------------------------------------

SECRET_HEADER_NAMES = [
    # the explicit list
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    # gateways and custom auth (issue 12)
    "cf-aig-authorization",
    "x-portkey-api-key",
    "helicone-auth",
    "x-auth",
    "x-custom-auth-header",
    "x-gateway-key",
    "x-vendor-api-key",
    "x-apikey",
    "x-access-token",
    "x-client-secret",
    "x-db-password",
    "x-request-signature",
    "openrouter-api-key",
    "X-Portkey-Virtual-Key",
    "x-my_key",
]
ORDINARY_HEADER_NAMES = [
    "keep-alive",
    "x-stainless-lang",
    "x-stainless-retry-count",
    "x-stainless-read-timeout",
    "x-stainless-helper-method",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "openai-beta",
    "content-type",
    "accept",
    "x-goog-api-client",
    "x-goog-user-project",
    "x-goog-request-params",
    "x-amz-content-sha256",
    "x-amz-target",
    "x-ms-client-request-id",
    "http-referer",
    "x-title",
    "cache-control",
    "sec-websocket-key",
    "cf-aig-cache-key",
    "x-max-tokens",
    "author",
    "x-monkey",
    "x-keys",
]


@pytest.mark.parametrize("name", SECRET_HEADER_NAMES)
def test_a_header_whose_name_says_secret_counts_by_presence(name: str) -> None:
    assert RULES.is_secret(name.lower())
    unsigned = dataclasses.replace(
        AZURE_CHAT, headers=tuple(h for h in AZURE_CHAT.headers if h[0] != "api-key")
    )
    one = dataclasses.replace(unsigned, headers=(*unsigned.headers, (name, "value-one-1234")))
    two = dataclasses.replace(unsigned, headers=(*unsigned.headers, (name, "value-two-5678")))
    assert key_for(one, RULES)[0] == key_for(two, RULES)[0] != key_for(unsigned, RULES)[0]
    # one credential, whichever header carried it (issue 13)
    assert key_for(one, RULES)[0] == key_for(AZURE_CHAT, RULES)[0]
    normalized = normalize(one, RULES)
    assert (CREDENTIAL_HEADER, REDACTED) in normalized["headers"]
    assert "value-one-1234" not in repr(normalized)


@pytest.mark.parametrize("name", ORDINARY_HEADER_NAMES)
def test_an_ordinary_header_is_no_secret(name: str) -> None:
    assert not RULES.is_secret(name)


def test_idempotency_key_matches_the_words_but_is_ignored_first() -> None:
    assert RULES.is_ignored("idempotency-key")
    with_it = dataclasses.replace(
        AZURE_CHAT, headers=(*AZURE_CHAT.headers, ("Idempotency-Key", "abc"))
    )
    assert key_for(with_it, RULES)[0] == key_for(AZURE_CHAT, RULES)[0]


def test_a_user_secret_name_overrides_the_built_in_exceptions() -> None:
    rules = KeyRules.with_extra(secret=("sec-websocket-key",))
    assert rules.is_secret("sec-websocket-key") and not RULES.is_secret("sec-websocket-key")


# --- account identifiers ---------------------------------------------------------------------

ACCOUNT = ["openai-organization", "openai-project", "anthropic-organization-id"]


@pytest.mark.parametrize("name", ACCOUNT)
def test_account_headers_count_by_presence_unless_kept(name: str) -> None:
    one = dataclasses.replace(AZURE_CHAT, headers=(*AZURE_CHAT.headers, (name, "org-one-1111")))
    two = dataclasses.replace(AZURE_CHAT, headers=(*AZURE_CHAT.headers, (name, "org-two-2222")))
    assert RULES.is_account(name) and RULES.is_secret(name)
    assert key_for(one, RULES)[0] == key_for(two, RULES)[0] != key_for(AZURE_CHAT, RULES)[0]
    assert "org-one-1111" not in repr(normalize(one, RULES))
    # kept: they count by value, as before issue 12
    assert not KEEP_ACCOUNT.is_account(name) and not KEEP_ACCOUNT.is_secret(name)
    assert key_for(one, KEEP_ACCOUNT)[0] != key_for(two, KEEP_ACCOUNT)[0]
    assert (name, "org-one-1111") in normalize(one, KEEP_ACCOUNT)["headers"]


def test_keep_account_is_part_of_the_rules() -> None:
    assert KEEP_ACCOUNT != RULES
    assert KeyRules.with_extra() == RULES
    assert KeyRules.with_extra(keep_account=False) == RULES


# --- query parameters ------------------------------------------------------------------------

SECRET_PARAMS = [
    "key",
    "api-key",
    "api_key",
    "apikey",
    "access_token",
    "token",
    "sig",
    "X-Goog-Signature",
    "X-Goog-Credential",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "Signature",
    "AWSAccessKeyId",
    "GoogleAccessId",
    "auth",
    "client_secret",
    "password",
    "x-portkey-api-key",
    "subscription-key",
    "id_token",
]
ORDINARY_PARAMS = [
    "alt",
    "api-version",
    "beta",
    "pageSize",
    "pageToken",
    "page_token",
    "next_page_token",
    "limit",
    "after",
    "order",
    "max_tokens",
    "keys",
    "monkey",
    "author",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "se",
    "sp",
    "sv",
]


@pytest.mark.parametrize("param", SECRET_PARAMS)
def test_a_query_parameter_whose_name_says_secret_counts_by_presence(param: str) -> None:
    assert RULES.is_secret_param(param)
    one = dataclasses.replace(AZURE_CHAT, query=f"api-version=1&{param}=AAAAsecret%2F1")
    two = dataclasses.replace(AZURE_CHAT, query=f"{param}=BBBBsecret%2F2&api-version=1")
    assert key_for(one, RULES)[0] == key_for(two, RULES)[0]
    assert "AAAAsecret" not in repr(normalize(one, RULES))


@pytest.mark.parametrize("param", ORDINARY_PARAMS)
def test_an_ordinary_query_parameter_counts_by_value(param: str) -> None:
    assert not RULES.is_secret_param(param)


# --- JSON fields -----------------------------------------------------------------------------

SECRET_FIELDS = [
    "api_key",
    "apiKey",
    "API_KEY",
    "apikey",
    "openai_api_key",
    "x-api-key",
    "access_token",
    "accessToken",
    "refresh_token",
    "token",
    "auth",
    "basic_auth",
    "authorization",
    "Authorization",
    "client_secret",
    "secret",
    "aws_secret_access_key",
    "aws_access_key_id",
    "password",
    "db_password",
    "private_key",
]
ORDINARY_FIELDS = [
    "max_tokens",
    "max_completion_tokens",
    "maxOutputTokens",
    "budget_tokens",
    "prompt_cache_key",
    "idempotency_key",
    "key",
    "keys",
    "signature",
    "thoughtSignature",
    "thought_signature",
    "page_token",
    "pageToken",
    "next_page_token",
    "eos_token",
    "stop_token",
    "author",
    "tool_use_id",
    "encrypted_content",
    "model",
    "content",
]


@pytest.mark.parametrize("field", SECRET_FIELDS)
def test_a_json_field_whose_name_says_secret_counts_by_presence(field: str) -> None:
    assert RULES.is_secret_field(field)

    def request(value: str, deep: bool) -> RequestParts:
        inner = {field: value, "other": "kept"}
        body = {"model": "m", "config": {"list": [inner]}} if deep else {"model": "m", **inner}
        return dataclasses.replace(AZURE_CHAT, body=json.dumps(body).encode())

    for deep in (False, True):
        one, two = request("sk-value-one-1234", deep), request("sk-value-two-5678", deep)
        assert key_for(one, RULES)[0] == key_for(two, RULES)[0]
        normalized = normalize(one, RULES)
        assert b"sk-value-one" not in normalized["body"]
        assert f'"{field}":"{REDACTED}"'.encode() in normalized["body"]
        assert b'"other":"kept"' in normalized["body"]


@pytest.mark.parametrize("field", ORDINARY_FIELDS)
def test_an_ordinary_json_field_counts_by_value(field: str) -> None:
    assert not RULES.is_secret_field(field)
    one = dataclasses.replace(AZURE_CHAT, body=json.dumps({field: "value-one"}).encode())
    two = dataclasses.replace(AZURE_CHAT, body=json.dumps({field: "value-two"}).encode())
    assert key_for(one, RULES)[0] != key_for(two, RULES)[0]


def test_only_string_values_of_secret_fields_are_redacted() -> None:
    """A tool's JSON schema may name a property `password`: its schema is no secret."""
    schema = {"properties": {"password": {"type": "string"}, "token": {"type": "string"}}}
    one = dataclasses.replace(AZURE_CHAT, body=json.dumps({"tools": [schema]}).encode())
    schema["properties"]["password"]["type"] = "integer"
    two = dataclasses.replace(AZURE_CHAT, body=json.dumps({"tools": [schema]}).encode())
    assert key_for(one, RULES)[0] != key_for(two, RULES)[0]
    counted = dataclasses.replace(AZURE_CHAT, body=b'{"token": 5}')
    other = dataclasses.replace(AZURE_CHAT, body=b'{"token": 6}')
    assert key_for(counted, RULES)[0] != key_for(other, RULES)[0]


def test_a_json_secret_field_counts_by_presence_not_absence() -> None:
    present = dataclasses.replace(AZURE_CHAT, body=b'{"model":"m","api_key":"sk-aaaaaaaaaa"}')
    absent = dataclasses.replace(AZURE_CHAT, body=b'{"model":"m"}')
    assert key_for(present, RULES)[0] != key_for(absent, RULES)[0]


def test_a_stored_json_body_keys_like_the_one_sent() -> None:
    """The diagnoser re-keys stored requests, whose secret fields hold the marker."""
    sent = dataclasses.replace(AZURE_CHAT, body=b'{"model":"m","api_key":"sk-aaaaaaaaaa"}')
    stored = dataclasses.replace(AZURE_CHAT, body=b'{"model":"m","api_key":"<redacted>"}')
    assert key_for(sent, RULES)[0] == key_for(stored, RULES)[0]
