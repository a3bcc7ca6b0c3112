"""Which hosts are providers: `cache_hosts` expansion and the matcher (SPEC §2)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.hosts import (
    BUILTIN_ALIAS,
    BUILTIN_HOSTS,
    HostMatcher,
    expand,
    host_regex,
    intercepted,
)

BUILTIN = HostMatcher(expand([BUILTIN_ALIAS]))

# --- expand ----------------------------------------------------------------------------------


def test_builtin_alias_expands_to_the_builtin_list() -> None:
    assert expand(["builtin"]) == BUILTIN_HOSTS
    assert expand([" BuiltIn "]) == BUILTIN_HOSTS


def test_builtin_list_covers_the_major_providers() -> None:
    for host in (
        "api.openai.com",
        "api.anthropic.com",
        "generativelanguage.googleapis.com",
        "*.openai.azure.com",
        "bedrock-runtime.*.amazonaws.com",
    ):
        assert host in BUILTIN_HOSTS


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["api.example.com"], ("api.example.com",)),
        (["  API.Example.COM  "], ("api.example.com",)),
        (["a.com", "b.com", "A.com"], ("a.com", "b.com")),
        (["*.Example.com"], ("*.example.com",)),
        (("a.com",), ("a.com",)),
        ([], ()),
    ],
)
def test_expand(patterns: list[str], expected: tuple[str, ...]) -> None:
    assert expand(patterns) == expected


def test_expand_extends_the_builtin_list_in_order_without_duplicates() -> None:
    expanded = expand(["llm.internal", "builtin", "api.openai.com", "*.Corp.Example"])
    assert expanded == ("llm.internal", *BUILTIN_HOSTS, "*.corp.example")
    assert expand(["builtin", "builtin"]) == BUILTIN_HOSTS


@pytest.mark.parametrize("patterns", [[""], ["   "], ["a.com", ""], ["\t"]])
def test_expand_rejects_empty_patterns(patterns: list[str]) -> None:
    with pytest.raises(ValueError, match="empty host pattern"):
        expand(patterns)


# --- HostMatcher -----------------------------------------------------------------------------


def test_matcher_splits_exact_names_from_globs() -> None:
    m = HostMatcher(("a.com", "*.b.com", "c?.com", "[de].com"))
    assert m.exact == frozenset({"a.com"})
    assert set(m.globs) == {"*.b.com", "c?.com", "[de].com"}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        # exact names
        ("api.openai.com", True),
        ("API.OpenAI.COM", True),
        ("api.openai.com.", True),
        ("api.anthropic.com", True),
        ("generativelanguage.googleapis.com", True),
        ("openai.com", False),
        ("api.openai.com.evil.com", False),
        ("evilapi.openai.com", False),
        ("xapi.anthropic.com", False),
        ("api.openai.co", False),
        ("", False),
        # *.openai.azure.com
        ("myres.openai.azure.com", True),
        ("MyRes.OpenAI.Azure.com", True),
        ("myres.openai.azure.com.", True),
        ("a.b.openai.azure.com", True),
        ("openai.azure.com", False),
        ("myres.openai.azure.com.evil.com", False),
        ("myresopenai.azure.com", False),
        # bedrock-runtime.*.amazonaws.com
        ("bedrock-runtime.us-east-1.amazonaws.com", True),
        ("Bedrock-Runtime.EU-West-3.AmazonAWS.com", True),
        ("bedrock-runtime-fips.us-gov-west-1.amazonaws.com", True),
        ("bedrock.us-east-1.amazonaws.com", False),
        ("bedrock-runtime.amazonaws.com", False),
        ("s3.us-east-1.amazonaws.com", False),
        # *-aiplatform.googleapis.com
        ("us-central1-aiplatform.googleapis.com", True),
        ("aiplatform.googleapis.com", True),
        ("storage.googleapis.com", False),
        # not providers
        ("example.com", False),
        ("pypi.org", False),
        ("provider-cache.internal", False),
    ],
)
def test_builtin_matcher(host: str, expected: bool) -> None:
    assert BUILTIN(host) is expected


@pytest.mark.parametrize(
    ("patterns", "host", "expected"),
    [
        (["llm.internal"], "llm.internal", True),
        (["llm.internal"], "LLM.Internal.", True),
        (["llm.internal"], "api.openai.com", False),
        (["LLM.Internal"], "llm.internal", True),
        (["*.corp.example"], "gw.corp.example", True),
        (["*.corp.example"], "corp.example", False),
        (["gw?.corp"], "gw1.corp", True),
        (["gw?.corp"], "gw12.corp", False),
        (["gw[12].corp"], "gw2.corp", True),
        (["gw[12].corp"], "gw3.corp", False),
        (["builtin", "llm.internal"], "api.openai.com", True),
        (["builtin", "llm.internal"], "llm.internal", True),
        (["builtin", "llm.internal"], "example.com", False),
        (["api.openai.com"], "api.anthropic.com", False),
    ],
)
def test_matcher_with_user_patterns(patterns: list[str], host: str, expected: bool) -> None:
    assert HostMatcher(expand(patterns))(host) is expected


@pytest.mark.parametrize(
    ("pattern", "host"),
    [("llm.internal.", "llm.internal"), ("llm.internal.", "llm.internal."), ("*.corp.", "a.corp")],
)
def test_pattern_with_trailing_dot_matches_like_the_host(pattern: str, host: str) -> None:
    # Hosts are compared without their trailing dot; an absolute name in cache_hosts must match
    # too rather than silently matching nothing.
    assert HostMatcher(expand([pattern]))(host)


@settings(max_examples=200, deadline=None)
@given(
    label=st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20),
    upper=st.booleans(),
    dot=st.booleans(),
)
def test_property_azure_resource_names_match_in_any_case(
    label: str, upper: bool, dot: bool
) -> None:
    host = f"{label}.openai.azure.com"
    host = host.upper() if upper else host
    assert BUILTIN(host + ("." if dot else ""))
    assert not BUILTIN(f"{label}.openai.azure.com.attacker.net")


@pytest.mark.parametrize("pattern", ["*", "*.internal", "provider-cache.internal", "provider-*"])
def test_the_endpoint_host_is_never_a_provider(pattern: str) -> None:
    matches = HostMatcher(expand(["builtin", pattern]))
    assert not matches("provider-cache.internal") and not matches("Provider-Cache.Internal.")
    assert matches("api.openai.com")


# --- host_regex: the same hosts as mitmproxy allow_hosts entries (issue 13) -----------------

PATTERNS = (*BUILTIN_HOSTS, "llm.internal", "gw?.corp", "gw[12].corp", "gw[!3].corp", "*", "a*b*c")
HOSTS = (
    "api.openai.com",
    "API.OpenAI.com.",
    "api.openai.com.evil.com",
    "myres.openai.azure.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "bedrock-runtime.amazonaws.com",
    "us-central1-aiplatform.googleapis.com",
    "gw1.corp",
    "gw3.corp",
    "abc",
    "llm.internal",
    "xllm.internal",
    "127.0.0.1",
)


def allowed(pattern: str, host: str, port: int = 443) -> bool:
    """As mitmproxy's NextLayer matches an allow_hosts entry: searched, ignoring case."""
    return re.search(host_regex(pattern), f"{host}:{port}", re.IGNORECASE) is not None


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("host", HOSTS)
def test_host_regex_allows_exactly_the_hosts_the_matcher_matches(pattern: str, host: str) -> None:
    assert allowed(pattern, host) is HostMatcher((pattern,))(host)


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(PATTERNS),
    host=st.text("ab.-*:01", min_size=1, max_size=16),
    port=st.integers(1, 65535),
)
def test_property_host_regex_agrees_with_the_matcher(pattern: str, host: str, port: int) -> None:
    assert allowed(pattern, host, port) is HostMatcher((pattern,))(host)


def test_host_regex_needs_the_port_mitmproxy_adds() -> None:
    assert allowed("api.openai.com", "api.openai.com", 8443)
    assert not re.search(host_regex("api.openai.com"), "api.openai.com")
    assert not re.search(host_regex("api.openai.com"), "x.api.openai.com:443")


def test_intercepted_hosts_are_the_patterns_and_the_endpoint() -> None:
    entries = intercepted(("llm.internal",))
    assert entries == (host_regex("llm.internal"), host_regex("provider-cache.internal"))
    assert any(re.search(e, "provider-cache.internal:443") for e in intercepted(()))
