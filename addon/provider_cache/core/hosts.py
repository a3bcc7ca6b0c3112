"""Which hosts are model providers: the built-in list and the glob matcher (SPEC §2)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import translate

from provider_cache.core.globs import NameMatcher
from provider_cache.core.names import ENDPOINT_HOST

#: Hosts whose traffic is cached unless `cache_hosts` says otherwise.
BUILTIN_HOSTS: tuple[str, ...] = (
    "api.openai.com",
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "*.cognitiveservices.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "*-aiplatform.googleapis.com",
    "bedrock-runtime.*.amazonaws.com",
    "bedrock-runtime-fips.*.amazonaws.com",
    "api.mistral.ai",
    "api.groq.com",
    "openrouter.ai",
    "api.together.xyz",
    "api.together.ai",
    "api.fireworks.ai",
    "api.deepseek.com",
    "api.x.ai",
    "api.cohere.com",
    "api.cohere.ai",
    "api.perplexity.ai",
    "api.voyageai.com",
    "api.cerebras.ai",
)

#: A `cache_hosts` entry that stands for the whole built-in list, so users can extend it.
BUILTIN_ALIAS = "builtin"


def expand(patterns: Sequence[str]) -> tuple[str, ...]:
    """Lower-cased patterns with the `builtin` alias replaced by the built-in list.

    A trailing dot is dropped as the matcher drops it from hosts, so that an absolute name
    (`llm.internal.`) matches instead of silently matching nothing.
    """
    out: list[str] = []
    for pattern in patterns:
        pattern = pattern.strip().lower().rstrip(".")
        if not pattern:
            raise ValueError("empty host pattern")
        out.extend(BUILTIN_HOSTS if pattern == BUILTIN_ALIAS else [pattern])
    return tuple(dict.fromkeys(out))


class HostMatcher(NameMatcher):
    """Host names: case and a trailing dot do not matter. The endpoint's reserved host is
    never a provider, whatever glob would match it (`*`, `*.internal`)."""

    def __call__(self, host: str) -> bool:
        return super().__call__(host.lower().rstrip("."))

    def _matches(self, name: str) -> bool:
        return name != ENDPOINT_HOST and super()._matches(name)


def intercepted(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """mitmproxy `allow_hosts` entries for the cached hosts and the endpoint (SPEC §2, §6).

    mitmproxy tunnels every other TLS connection untouched (pinned and mTLS clients keep
    working); the endpoint's host must be intercepted too, to be answered over HTTPS.
    """
    return tuple(host_regex(p) for p in (*patterns, ENDPOINT_HOST))


def host_regex(pattern: str) -> str:
    """A host glob as the regex mitmproxy searches, ignoring case, in "host:port".

    fnmatch's own translation, so it matches exactly the hosts HostMatcher matches; its
    end-of-string anchor (`\\Z`, `\\z` from Python 3.14) gives way to the port.
    """
    body = re.sub(r"\\[Zz]$", "", translate(pattern))
    return rf"^{body}\.?:\d+$"
