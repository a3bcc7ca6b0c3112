"""Every streamed wire format through a real proxy with real SDKs (SPEC §4; issue 15).

boto3's bedrock-runtime (AWS event streams), google-genai (JSON and `alt=sse`), the openai
SDK's Responses API and AzureOpenAI, and httpx for Gemini's streamed JSON array and
Ollama's NDJSON: each recorded, then replayed offline with the SDK yielding the same events
from the same bytes, and each stream reaching the client while it is recorded. The calls
here also serve tests/e2e/test_stream_faults_sdk.py (faults, counts, secrets).
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from botocore.config import Config
from google import genai
from google.genai import types as genai_types

from provider_cache.core import records
from provider_cache.storage.store import Store
from tests.support import secrets
from tests.support.fake_provider import AZURE_HOST, FakeProvider
from tests.support.proxy import Mitmdump
from tests.support.s3server import AWS_SECRET_ACCESS_KEY

PROMPT = "what is a cache really"  # six pieces of answer: a ConverseStream of 10 events
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
BEDROCK_HOST = "bedrock-runtime.us-east-1.amazonaws.com"
BEDROCK = f"https://{BEDROCK_HOST}/model"
GEMINI_HOST = "generativelanguage.googleapis.com"
GEMINI = f"https://{GEMINI_HOST}/v1beta/models"
AZURE_API_VERSION = "2024-10-21"


# --- the calls: through the proxy of the environment, or straight to the fake -----------------


@dataclass(frozen=True)
class Target:
    """Where a call goes: by default the real host names, through the proxy and its CA as
    the environment says; `base` and `ca`: straight to the fake provider."""

    base: str | None = None
    ca: str | None = None

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca) if self.ca else None


PROXIED = Target()
MESSAGES = [{"role": "user", "content": [{"text": PROMPT}]}]


def bedrock(target: Target) -> Any:
    """boto3 as users configure it: the real endpoint; the proxy and its CA from
    HTTPS_PROXY and REQUESTS_CA_BUNDLE."""
    config = Config(retries={"total_max_attempts": 1}, read_timeout=30)
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=target.base,
        verify=target.ca,
        aws_access_key_id="AKIAFAKESTREAMTEST01",
        aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
        config=config,
    )


def converse(target: Target, model: str) -> Any:
    with closing(bedrock(target)) as client:
        answer = client.converse(modelId=model, messages=MESSAGES)
    return {k: answer[k] for k in ("output", "stopReason", "usage", "metrics")}


def converse_stream(target: Target, model: str) -> list:
    with closing(bedrock(target)) as client:
        answer = client.converse_stream(modelId=model, messages=MESSAGES)
        with closing(answer["stream"]) as events:  # its connection, also when it raises
            return list(events)


def invoke_stream(target: Target, model: str) -> list:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "messages": MESSAGES}
    with closing(bedrock(target)) as client:
        answer = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))
        with closing(answer["body"]) as events:
            return [json.loads(event["chunk"]["bytes"]) for event in events]


def gemini(target: Target) -> genai.Client:
    options = genai_types.HttpOptions(
        retry_options=genai_types.HttpRetryOptions(attempts=1),
        base_url=target.base,
        client_args={"verify": target.context()} if target.ca else None,
    )
    return genai.Client(api_key=secrets.GOOGLE_KEY, http_options=options)


def _dump(answer: Any) -> Any:
    """The SDK's parsed answer without the HTTP response (its headers say hit or miss)."""
    return answer.model_dump(mode="json", exclude={"sdk_http_response"})


def gemini_generate(target: Target, model: str) -> Any:
    client = gemini(target)  # held: a collected client closes its connections
    return _dump(client.models.generate_content(model=model, contents=PROMPT))


def gemini_stream(target: Target, model: str) -> list:
    client = gemini(target)
    stream = client.models.generate_content_stream(model=model, contents=PROMPT)
    return [_dump(chunk) for chunk in stream]


def openai_client(target: Target) -> openai.OpenAI:
    key = secrets.OPENAI_KEY
    if target.base is None:
        return openai.OpenAI(api_key=key, max_retries=0)
    http = openai.DefaultHttpxClient(verify=target.context() or True)
    return openai.OpenAI(api_key=key, max_retries=0, base_url=f"{target.base}/v1", http_client=http)


def responses(target: Target, model: str) -> Any:
    with openai_client(target) as client:
        return client.responses.create(model=model, input=PROMPT).model_dump()


def responses_stream(target: Target, model: str) -> list:
    with openai_client(target) as client:
        stream = client.responses.create(model=model, input=PROMPT, stream=True)
        return [event.model_dump() for event in stream]


def chat_stream(target: Target, model: str) -> list:
    """OpenAI chat, streamed: the SDK hangs up as soon as it reads `data: [DONE]`."""
    with openai_client(target) as client:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        return [chunk.model_dump() for chunk in stream]


def azure_chat_stream(target: Target, model: str) -> list:
    """AzureOpenAI as users configure it: the resource's endpoint, an api-key, a version."""
    endpoint = target.base or f"https://{AZURE_HOST}"
    http = openai.DefaultHttpxClient(verify=target.context() or True) if target.ca else None
    with openai.AzureOpenAI(
        azure_endpoint=endpoint,
        api_key=secrets.AZURE_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
        http_client=http,
    ) as client:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        return [chunk.model_dump() for chunk in stream]


def raw_post(target: Target, url: str, body: dict) -> bytes:
    """The body as received (httpx), still content-encoded."""
    if target.base is not None:
        url = target.base + "/" + url.split("/", 3)[3]
    verify: ssl.SSLContext | bool = target.context() or True
    with (
        httpx.Client(timeout=30, verify=verify, trust_env=target.base is None) as client,
        client.stream("POST", url, json=body) as answer,
    ):
        assert answer.status_code == 200, answer.read()
        return b"".join(answer.iter_raw())


def gemini_raw(target: Target, model: str, query: str = "") -> bytes:
    """Gemini's streamGenerateContent by httpx: without `alt=sse` (a JSON array, which
    google-genai never asks for), or with it."""
    body = {"contents": [{"parts": [{"text": PROMPT}]}]}
    return raw_post(target, f"{GEMINI}/{model}:streamGenerateContent{query}", body)


def ollama(target: Target, model: str) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    return raw_post(target, "https://api.openai.com/api/chat", body)


@dataclass(frozen=True)
class Call:
    run: Callable[[Target, str], Any]
    model: str
    host: str
    #: What the request's path holds: the call reached the route it names.
    path: str
    streamed: bool


CALLS: dict[str, Call] = {
    "bedrock-converse": Call(converse, BEDROCK_MODEL, BEDROCK_HOST, "/converse", False),
    "bedrock-converse-stream": Call(
        converse_stream, BEDROCK_MODEL, BEDROCK_HOST, "/converse-stream", True
    ),
    "bedrock-invoke-stream": Call(
        invoke_stream, BEDROCK_MODEL, BEDROCK_HOST, "/invoke-with-response-stream", True
    ),
    "gemini-generate": Call(
        gemini_generate, "gemini-2.0-flash", GEMINI_HOST, ":generateContent", False
    ),
    "gemini-stream-sse": Call(
        gemini_stream, "gemini-2.0-flash", GEMINI_HOST, ":streamGenerateContent?alt=sse", True
    ),
    "gemini-stream-array": Call(
        gemini_raw, "gemini-2.0-flash", GEMINI_HOST, ":streamGenerateContent", True
    ),
    "openai-responses": Call(responses, "gpt-4o-mini", "api.openai.com", "/v1/responses", False),
    "openai-responses-stream": Call(
        responses_stream, "gpt-4o-mini", "api.openai.com", "/v1/responses", True
    ),
    "azure-chat-stream": Call(
        azure_chat_stream, "gpt-4o-mini", AZURE_HOST, "/deployments/gpt-4o-mini/chat/", True
    ),
    "ollama-ndjson": Call(ollama, "llama3", "api.openai.com", "/api/chat", True),
}
#: The fake's per-request counter in its answers' ids: what differs between two calls.
_SERVED_IDS = re.compile(r"\b(resp_|msg_|gem-|chatcmpl-)\d+")


def outcome(call: Call, model: str, target: Target = PROXIED) -> tuple[str, str]:
    """What the client got, ids aside: its events (or body), or the error it raised."""
    try:
        got = call.run(target, model)
    except Exception as e:  # the SDK's own error for a broken stream: part of the outcome
        return "", type(e).__name__
    text = got.decode() if isinstance(got, bytes) else json.dumps(got, default=str)
    return _SERVED_IDS.sub(r"\1N", text), ""


def stored(cache_dir: Path) -> list[records.Entry]:
    """The entries on disk (read with the proxy stopped)."""
    if not cache_dir.exists():
        return []
    with Store(cache_dir, readonly=True) as store:
        return [records.unpack(value) for _, value in store.items()]


def stats_file(proxy: Mitmdump, cache_dir: Path) -> dict:
    """The stats file as the stopped proxy left it."""
    assert proxy.stop() == 0, proxy.log()
    return json.loads((cache_dir / "stats.json").read_text())


# --- recorded, then replayed offline ---------------------------------------------------------


@pytest.mark.parametrize("name", CALLS)
def test_recorded_then_replayed_offline_with_the_same_events_from_the_same_bytes(
    name: str, start_proxy, use_proxy, fake: FakeProvider, cache_dir: Path
) -> None:
    call = CALLS[name]
    use_proxy(start_proxy("record"))
    recorded = call.run(PROXIED, call.model)
    assert fake.served == 1
    assert call.path in fake.requests[0]["path"]

    replay = start_proxy("replay", offline=True)
    use_proxy(replay)
    replayed = call.run(PROXIED, call.model)

    assert replayed == recorded
    assert PROMPT.split()[-1] in json.dumps(recorded, default=str)  # the answer, not an error
    assert fake.served == 1
    assert replay.stop() == 0
    (entry,) = stored(cache_dir)
    if call.streamed:  # kept as the chunks that came, which are the bytes the fake sent
        assert entry.response.chunks is not None
        assert b"".join(entry.response.chunks) == bytes(fake.streamed[0])
    else:
        assert entry.response.chunks is None


RAW_STREAMS: dict[str, Callable[[Target], bytes]] = {
    "converse-stream": lambda t: raw_post(
        t, f"{BEDROCK}/{BEDROCK_MODEL}/converse-stream", {"messages": MESSAGES}
    ),
    "invoke-stream": lambda t: raw_post(
        t, f"{BEDROCK}/{BEDROCK_MODEL}/invoke-with-response-stream", {"messages": MESSAGES}
    ),
    "gemini-sse": lambda t: gemini_raw(t, "gemini-2.0-flash", "?alt=sse"),
    "gemini-array": lambda t: gemini_raw(t, "gemini-2.0-flash"),
    "ollama-ndjson": lambda t: ollama(t, "llama3"),
}


def test_every_stream_replays_byte_for_byte_as_the_provider_sent_it(
    start_proxy, use_proxy, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record"))
    recorded = {name: post(PROXIED) for name, post in RAW_STREAMS.items()}
    sent = [bytes(body) for body in fake.streamed]
    use_proxy(start_proxy("replay", offline=True))
    replayed = {name: post(PROXIED) for name, post in RAW_STREAMS.items()}

    assert list(recorded.values()) == sent
    assert replayed == recorded
    assert fake.served == len(RAW_STREAMS)


def test_a_gzipped_stream_is_checked_decoded_and_replayed(
    start_proxy, use_proxy, fake: FakeProvider
) -> None:
    fake.stream_encoding = "gzip"
    use_proxy(start_proxy("record"))
    recorded = responses_stream(PROXIED, "gpt-4o-mini")
    use_proxy(start_proxy("replay", offline=True))
    assert responses_stream(PROXIED, "gpt-4o-mini") == recorded
    assert fake.served == 1


# --- streamed live while recorded ------------------------------------------------------------


def _bedrock_arrivals() -> tuple[float, float]:
    with closing(bedrock(PROXIED)) as client:
        started = time.perf_counter()
        stream = client.converse_stream(modelId=BEDROCK_MODEL, messages=MESSAGES)["stream"]
        with closing(stream):
            events = iter(stream)
            next(events)
            first = time.perf_counter() - started
            for _ in events:
                pass
        return first, time.perf_counter() - started


def _httpx_arrivals(url: str, body: dict) -> tuple[float, float]:
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        with client.stream("POST", url, json=body) as answer:
            pieces = answer.iter_raw()
            next(pieces)
            first = time.perf_counter() - started
            for _ in pieces:
                pass
        return first, time.perf_counter() - started


#: Each stream's first and total arrival; its number of pieces (one delay between two).
ARRIVALS: dict[str, tuple[Callable[[], tuple[float, float]], int]] = {
    "bedrock-converse-stream": (_bedrock_arrivals, 10),
    "ollama-ndjson": (
        lambda: _httpx_arrivals(
            "https://api.openai.com/api/chat",
            {"model": "llama3", "messages": [{"role": "user", "content": PROMPT}]},
        ),
        7,
    ),
    "gemini-stream-array": (
        lambda: _httpx_arrivals(
            f"{GEMINI}/gemini-2.0-flash:streamGenerateContent",
            {"contents": [{"parts": [{"text": PROMPT}]}]},
        ),
        7,
    ),
}


@pytest.mark.parametrize("name", ARRIVALS)
def test_a_stream_reaches_the_client_piece_by_piece_while_recorded(
    name: str, start_proxy, use_proxy, fake: FakeProvider, cache_dir: Path
) -> None:
    """Pieces 100 ms apart: the first arrives long before the stream ends (before issue
    15, an event stream, NDJSON or a JSON array came only once it was buffered whole)."""
    arrivals, pieces = ARRIVALS[name]
    fake.chunk_delay = 0.1
    proxy = start_proxy("record")
    use_proxy(proxy)
    first, end = arrivals()
    assert end >= 0.9 * (pieces - 1) * fake.chunk_delay  # the fake really paced it
    assert first < 0.4 * end, (first, end)
    stats = stats_file(proxy, cache_dir)
    assert stats["recorded"] == 1  # and it was recorded all the same
