"""Which hosts are model providers: the built-in list and the glob matcher (SPEC §2)."""

from __future__ import annotations

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


def expand(patterns: list[str] | tuple[str, ...]) -> tuple[str, ...]:
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
