"""The requests real SDKs send, headers in wire order and case: a table for the key tests.

How they were captured (issue 13): each SDK was pointed, with fake credentials and retries
off, at tests/support/fake_provider.py (HTTPS on localhost), and the request the fake received
was copied here as it came, except `Host`, set to the provider's host (the SDKs sent
`localhost:<port>`). Linux x86_64 (kernel 6.18.44), December 2026:
- CPython 3.12.1: openai 3.57.0, anthropic 2.15.0, google-genai 3.6.1, boto3 1.44.8
  (bedrock-runtime Converse), azure-ai-inference 1.0.0b9 (azure-core 1.41.0), cohere 7.3.1
  (Fern-generated), litellm 1.110.2 (its openai/ and anthropic/ providers; the first sends
  through the openai SDK).
- CPython 3.11.7: openai 1.109.1, anthropic 0.49.0, google-genai 1.30.0, boto3 1.35.0
  (botocore 1.35.99), azure-ai-inference 1.0.0b6 (azure-core 1.32.0), cohere 5.15.0.

The *_MACOS requests are synthesised, not captured: the captured request as the same SDK
would send it from a Mac (arm64, Darwin 24.1.0, CPython 3.13.1), written in the SDK's own
format (its user agent, X-Stainless-OS, X-Fern-Platform strings), with a fresh request id and
retry count where the SDK sends them.
"""

from __future__ import annotations

import dataclasses

from provider_cache.core.keys import RequestParts

Headers = tuple[tuple[str, str], ...]


def _request(method: str, url: str, headers: Headers, body: bytes) -> RequestParts:
    """A request to https://<url>; `url` is host, path and query."""
    host, _, rest = url.partition("/")
    path, _, query = f"/{rest}".partition("?")
    return RequestParts(method, "https", host, 443, path, query, headers, body)


def sent_with(request: RequestParts, headers: Headers) -> RequestParts:
    """`request` with another SDK's headers: what that one sends for the same call."""
    return dataclasses.replace(request, headers=headers)


def _replaced(headers: Headers, **values: str) -> Headers:
    """Headers with the named ones (lower case, `_` for `-`) set to other values."""
    other = {name.replace("_", "-"): value for name, value in values.items()}
    return tuple((n, other.get(n.lower(), v)) for n, v in headers)


# --- openai (Stainless-generated) ------------------------------------------------------------

OPENAI_3 = _request(
    "POST",
    "api.openai.com/v1/chat/completions",
    (
        ("Host", "api.openai.com"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("authorization", "Bearer sk-test-openai"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 3.57.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "3.57.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.12.1"),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("Content-Length", "67"),
    ),
    b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
)
OPENAI_1 = _request(
    "POST",
    "api.openai.com/v1/chat/completions",
    (
        ("Host", "api.openai.com"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", "OpenAI/Python 1.109.1"),
        ("X-Stainless-Lang", "python"),
        ("X-Stainless-Package-Version", "1.109.1"),
        ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Arch", "x64"),
        ("X-Stainless-Runtime", "CPython"),
        ("X-Stainless-Runtime-Version", "3.11.7"),
        ("Authorization", "Bearer sk-test-openai"),
        ("X-Stainless-Async", "false"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("Content-Length", "67"),
    ),
    b'{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}',
)
OPENAI_3_MACOS = sent_with(
    OPENAI_3,
    _replaced(
        OPENAI_3.headers,
        x_stainless_os="MacOS",
        x_stainless_arch="arm64",
        x_stainless_runtime_version="3.13.1",
        x_stainless_retry_count="1",
    ),
)
#: openai 3.x's AzureOpenAI sends its key in api-key only; 1.x sent Authorization too.
AZURE_OPENAI_3 = _request(
    "POST",
    "res.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
    (
        ("Host", "res.openai.azure.com"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("api-key", "azure-test-key"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "AzureOpenAI/Python 3.57.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "3.57.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.12.1"),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("Content-Length", "67"),
    ),
    b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
)
AZURE_OPENAI_1 = _request(
    "POST",
    "res.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
    (
        ("Host", "res.openai.azure.com"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", "AzureOpenAI/Python 1.109.1"),
        ("X-Stainless-Lang", "python"),
        ("X-Stainless-Package-Version", "1.109.1"),
        ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Arch", "x64"),
        ("X-Stainless-Runtime", "CPython"),
        ("X-Stainless-Runtime-Version", "3.11.7"),
        ("Authorization", "Bearer azure-test-key"),
        ("X-Stainless-Async", "false"),
        ("api-key", "azure-test-key"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("Content-Length", "67"),
    ),
    b'{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}',
)

# --- anthropic (Stainless-generated) ---------------------------------------------------------

#: anthropic 2.x sends its key in Authorization; 0.x sent X-Api-Key. Its default
#: anthropic-version changed too: a real difference, which the key keeps.
ANTHROPIC_2 = _request(
    "POST",
    "api.anthropic.com/v1/messages",
    (
        ("Host", "api.anthropic.com"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Connection", "keep-alive"),
        ("x-stainless-timeout", "600"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", "Anthropic/Python 2.15.0"),
        ("X-Stainless-Lang", "python"),
        ("X-Stainless-Package-Version", "2.15.0"),
        ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Arch", "x64"),
        ("X-Stainless-Runtime", "CPython"),
        ("X-Stainless-Runtime-Version", "3.12.1"),
        ("Authorization", "Bearer sk-ant-test"),
        ("X-Stainless-Async", "false"),
        ("anthropic-version", "2026-10-21"),
        ("Content-Length", "83"),
    ),
    b'{"max_tokens":16,"messages":[{"role":"user","content":"hi"}],"model":"claude-test"}',
)
ANTHROPIC_0 = _request(
    "POST",
    "api.anthropic.com/v1/messages",
    (
        ("Host", "api.anthropic.com"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("x-stainless-timeout", "600"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", "Anthropic/Python 0.49.0"),
        ("X-Stainless-Lang", "python"),
        ("X-Stainless-Package-Version", "0.49.0"),
        ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Arch", "x64"),
        ("X-Stainless-Runtime", "CPython"),
        ("X-Stainless-Runtime-Version", "3.11.7"),
        ("X-Api-Key", "sk-ant-test"),
        ("X-Stainless-Async", "false"),
        ("anthropic-version", "2023-06-01"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("Content-Length", "83"),
    ),
    b'{"max_tokens":16,"messages":[{"role":"user","content":"hi"}],"model":"claude-test"}',
)
ANTHROPIC_2_MACOS = sent_with(
    ANTHROPIC_2,
    _replaced(
        ANTHROPIC_2.headers,
        x_stainless_os="MacOS",
        x_stainless_arch="arm64",
        x_stainless_runtime_version="3.13.1",
        x_stainless_retry_count="2",
        authorization="Bearer sk-ant-other-machine",
    ),
)

# --- google-genai ----------------------------------------------------------------------------

#: google-genai 3.x calls /v1 by default, 1.x /v1beta: another request (a miss, rightly).
GOOGLE_GENAI_3 = _request(
    "POST",
    "generativelanguage.googleapis.com/v1/models/gemini-2.5-flash:generateContent",
    (
        ("Host", "generativelanguage.googleapis.com"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Connection", "keep-alive"),
        ("Content-Type", "application/json"),
        ("x-goog-api-key", "AIza-test"),
        ("user-agent", "google-genai-sdk/3.6.1 gl-python/3.12.1"),
        ("x-goog-api-client", "google-genai-sdk/3.6.1 gl-python/3.12.1"),
        ("Content-Length", "59"),
    ),
    b'{"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}',
)
GOOGLE_GENAI_1 = _request(
    "POST",
    "generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
    (
        ("Host", "generativelanguage.googleapis.com"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Content-Type", "application/json"),
        ("x-goog-api-key", "AIza-test"),
        ("user-agent", "google-genai-sdk/1.30.0 gl-python/3.11.7"),
        ("x-goog-api-client", "google-genai-sdk/1.30.0 gl-python/3.11.7"),
        ("Content-Length", "59"),
    ),
    b'{"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}',
)

# --- boto3 bedrock-runtime (SigV4) -----------------------------------------------------------

BEDROCK_1_44 = _request(
    "POST",
    "bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku/converse",
    (
        ("Host", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("Accept-Encoding", "identity"),
        ("Content-Type", "application/json"),
        (
            "User-Agent",
            "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 "
            "lang/python#3.12.1 md/pyimpl#CPython m/E,Z,N,e,b cfg/retry-mode#standard "
            "Botocore/1.44.8",
        ),
        ("X-Amz-Date", "20261202T071156Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIATESTTESTTESTTEST/20261202/us-east-1/bedrock/"
            "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
            "Signature=53f9f8610631e34a080c3a98f67fa7bdff3260d77733d83a3b8b75c962bb074a",
        ),
        ("amz-sdk-invocation-id", "b44e30d9-14e3-4b61-b845-3645715e6ea5"),
        ("amz-sdk-request", "attempt=1; max=2"),
        ("Content-Length", "61"),
    ),
    b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}',
)
#: Temporary credentials (a CI role): the session token is a second credential header.
BEDROCK_1_35_SESSION = _request(
    "POST",
    "bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku/converse",
    (
        ("Host", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("Accept-Encoding", "identity"),
        ("Content-Type", "application/json"),
        (
            "User-Agent",
            "Boto3/1.35.0 md/Botocore#1.35.99 ua/2.0 os/linux#6.18.44-fc-v669 md/arch#x86_64 "
            "lang/python#3.11.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.35.99",
        ),
        ("X-Amz-Date", "20261202T071412Z"),
        ("X-Amz-Security-Token", "session-token-test"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIATESTTESTTESTTEST/20261202/us-east-1/bedrock/"
            "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "
            "Signature=79a01a0b64277084fe148f98f6a59b728d911e5c5b55752b64901096f01a711f",
        ),
        ("amz-sdk-invocation-id", "1765fcb8-0bbd-44f5-ab51-943ac218d659"),
        ("amz-sdk-request", "attempt=1"),
        ("Content-Length", "61"),
    ),
    b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}',
)

# --- azure-core (azure-ai-inference) ---------------------------------------------------------

#: azure-core sends a fresh x-ms-client-request-id with every request, and the key twice.
AZURE_INFERENCE_B9 = _request(
    "POST",
    "res.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview",
    (
        ("Host", "res.services.ai.azure.com"),
        (
            "User-Agent",
            "azsdk-python-ai-inference/1.0.0b9 Python/3.12.1 "
            "(Linux-6.18.44-fc-v669-x86_64-with-glibc2.36)",
        ),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept", "application/json"),
        ("Connection", "keep-alive"),
        ("Content-Type", "application/json"),
        ("Content-Length", "73"),
        ("x-ms-client-request-id", "a8a22ade-ee1f-11f1-bc78-02fc00000001"),
        ("api-key", "azure-test-key"),
        ("Authorization", "Bearer azure-test-key"),
    ),
    b'{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini"}',
)
AZURE_INFERENCE_B6 = _request(
    "POST",
    "res.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview",
    (
        ("Host", "res.services.ai.azure.com"),
        (
            "User-Agent",
            "azsdk-python-ai-inference/1.0.0b6 Python/3.11.7 "
            "(Linux-6.18.44-fc-v669-x86_64-with-glibc2.36)",
        ),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept", "application/json"),
        ("Connection", "keep-alive"),
        ("Content-Type", "application/json"),
        ("Content-Length", "73"),
        ("x-ms-client-request-id", "0249a652-ee20-11f1-89f6-02fc00000001"),
        ("api-key", "azure-test-key"),
        ("Authorization", "Bearer azure-test-key"),
    ),
    b'{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini"}',
)
AZURE_INFERENCE_B9_MACOS = sent_with(
    AZURE_INFERENCE_B9,
    _replaced(
        AZURE_INFERENCE_B9.headers,
        user_agent="azsdk-python-ai-inference/1.0.0b9 Python/3.13.1 (macOS-15.1-arm64-arm-64bit)",
        x_ms_client_request_id="5f0c7e3a-ee21-11f1-9a4e-acde48001122",
    ),
)

# --- Fern-generated (cohere) -----------------------------------------------------------------

COHERE_7 = _request(
    "POST",
    "api.cohere.com/v2/chat",
    (
        ("Host", "api.cohere.com"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("User-Agent", "cohere/7.3.1"),
        ("X-Fern-Language", "Python"),
        ("X-Fern-Runtime", "python/3.12.1"),
        ("X-Fern-Platform", "linux/6.18.44-fc-v669"),
        ("X-Fern-SDK-Name", "cohere"),
        ("X-Fern-SDK-Version", "7.3.1"),
        ("Authorization", "Bearer cohere-test"),
        ("content-type", "application/json"),
        ("Content-Length", "80"),
    ),
    b'{"model":"command-r","messages":[{"role":"user","content":"hi"}],"stream":false}',
)
COHERE_5 = _request(
    "POST",
    "api.cohere.com/v2/chat",
    (
        ("Host", "api.cohere.com"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("User-Agent", "python-httpx/0.28.1"),
        ("X-Fern-Language", "Python"),
        ("X-Fern-SDK-Name", "cohere"),
        ("X-Fern-SDK-Version", "5.15.0"),
        ("Authorization", "Bearer cohere-test"),
        ("content-type", "application/json"),
        ("Content-Length", "80"),
    ),
    b'{"model":"command-r","messages":[{"role":"user","content":"hi"}],"stream":false}',
)
COHERE_7_MACOS = sent_with(
    COHERE_7,
    _replaced(COHERE_7.headers, x_fern_runtime="python/3.13.1", x_fern_platform="darwin/24.1.0"),
)

# --- litellm ---------------------------------------------------------------------------------

LITELLM_OPENAI = _request(
    "POST",
    "api.openai.com/v1/chat/completions",
    (
        ("Host", "api.openai.com"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("authorization", "Bearer litellm-test"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 3.57.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "3.57.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.12.1"),
        ("x-stainless-async", "false"),
        ("x-stainless-raw-response", "true"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600.0"),
        ("Content-Length", "83"),
    ),
    b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}',
)
LITELLM_ANTHROPIC = _request(
    "POST",
    "api.anthropic.com/v1/messages",
    (
        ("Host", "api.anthropic.com"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("User-Agent", "litellm/1.110.2"),
        ("anthropic-version", "2023-06-01"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("x-api-key", "litellm-test"),
        ("Content-Length", "119"),
    ),
    b'{"model": "claude-test", "messages": [{"role": "user", "content": [{"type": "text", '
    b'"text": "hi"}]}], "max_tokens": 16}',
)
#: litellm's openai/ provider under openai 1.109.1 on a Mac (synthesised).
LITELLM_OPENAI_MACOS = sent_with(
    LITELLM_OPENAI,
    _replaced(
        LITELLM_OPENAI.headers,
        user_agent="OpenAI/Python 1.109.1",
        x_stainless_package_version="1.109.1",
        x_stainless_os="MacOS",
        x_stainless_arch="arm64",
        x_stainless_runtime_version="3.13.1",
    ),
)
LITELLM_ANTHROPIC_MACOS = sent_with(
    LITELLM_ANTHROPIC, _replaced(LITELLM_ANTHROPIC.headers, user_agent="litellm/1.60.0")
)

#: Every request in the table, by the SDK that sent it.
ALL: dict[str, RequestParts] = {
    "openai 3.57.0": OPENAI_3,
    "openai 1.109.1": OPENAI_1,
    "openai 3.57.0 AzureOpenAI": AZURE_OPENAI_3,
    "openai 1.109.1 AzureOpenAI": AZURE_OPENAI_1,
    "anthropic 2.15.0": ANTHROPIC_2,
    "anthropic 0.49.0": ANTHROPIC_0,
    "google-genai 3.6.1": GOOGLE_GENAI_3,
    "google-genai 1.30.0": GOOGLE_GENAI_1,
    "boto3 1.44.8": BEDROCK_1_44,
    "boto3 1.35.0 (session token)": BEDROCK_1_35_SESSION,
    "azure-ai-inference 1.0.0b9": AZURE_INFERENCE_B9,
    "azure-ai-inference 1.0.0b6": AZURE_INFERENCE_B6,
    "cohere 7.3.1": COHERE_7,
    "cohere 5.15.0": COHERE_5,
    "litellm 1.110.2 openai/": LITELLM_OPENAI,
    "litellm 1.110.2 anthropic/": LITELLM_ANTHROPIC,
}

#: The same call from two SDK versions, Pythons or machines: (label, one, other). Where the
#: versions' requests differ in a real way (a default API version), the other version's
#: captured headers are put on the first one's request (`sent_with`).
SAME_CALL: list[tuple[str, RequestParts, RequestParts]] = [
    ("openai 3.57.0 / 1.109.1", OPENAI_3, OPENAI_1),
    ("openai 3.57.0 Linux / macOS", OPENAI_3, OPENAI_3_MACOS),
    ("AzureOpenAI 3.57.0 / 1.109.1", AZURE_OPENAI_3, AZURE_OPENAI_1),
    ("anthropic 2.15.0 Linux / macOS", ANTHROPIC_2, ANTHROPIC_2_MACOS),
    (
        "google-genai 3.6.1 / 1.30.0",
        GOOGLE_GENAI_3,
        sent_with(GOOGLE_GENAI_3, GOOGLE_GENAI_1.headers),
    ),
    ("boto3 1.44.8 / 1.35.0 with a session token", BEDROCK_1_44, BEDROCK_1_35_SESSION),
    ("azure-ai-inference 1.0.0b9 / 1.0.0b6", AZURE_INFERENCE_B9, AZURE_INFERENCE_B6),
    ("azure-ai-inference Linux / macOS", AZURE_INFERENCE_B9, AZURE_INFERENCE_B9_MACOS),
    ("cohere 7.3.1 / 5.15.0", COHERE_7, COHERE_5),
    ("cohere 7.3.1 Linux / macOS", COHERE_7, COHERE_7_MACOS),
    ("litellm openai/ Linux / macOS", LITELLM_OPENAI, LITELLM_OPENAI_MACOS),
    ("litellm anthropic/ 1.110.2 / 1.60.0", LITELLM_ANTHROPIC, LITELLM_ANTHROPIC_MACOS),
]

#: The headers in the table that say what is asked (all others vary by machine, version or
#: retry, or are credentials, which count by presence).
SEMANTIC_HEADERS = frozenset({"accept", "content-type", "anthropic-version"})
#: The table's credential headers.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "x-goog-api-key", "x-amz-security-token"}
)
