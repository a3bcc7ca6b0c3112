"""The benchmark's client side: the payloads, and a keep-alive HTTPS load client.

Standard library asyncio only. Requests go through the proxy's CONNECT tunnel as the
SDKs send them (HTTP/1.1 offered in ALPN, as httpx does by default); scripts/benchmark/http2.py
is the HTTP/2 variant, scripts/benchmark/upstream.py the fake provider.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- payloads -------------------------------------------------------------------------------

HOST = "api.openai.com"  # what hit-path requests name; never contacted (lazy connections)
PATH = "/v1/chat/completions"
REQUEST_SIZE = 4096
RESPONSE_SIZE = 16384
SSE_EVENTS = 30
_FILLER = "You are a careful assistant. Answer briefly and cite the sources you use. "

#: Request headers as the openai SDK sends them (the volatile ones are ignored by the key).
CLIENT_HEADERS: tuple[tuple[str, str], ...] = (
    ("accept", "application/json"),
    ("content-type", "application/json"),
    ("user-agent", "OpenAI/Python 1.99.0"),
    ("x-stainless-lang", "python"),
    ("x-stainless-package-version", "1.99.0"),
    ("x-stainless-os", "Linux"),
    ("x-stainless-arch", "x64"),
    ("x-stainless-runtime", "CPython"),
    ("x-stainless-runtime-version", "3.12.1"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-read-timeout", "600"),
    ("authorization", "Bearer sk-bench-placeholder"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
)


def _padded(doc: dict, slot: Callable[[dict, str], None], size: int) -> bytes:
    """`doc` as compact JSON of about `size` bytes, padded through `slot`."""
    slot(doc, "")
    pad = size - len(json.dumps(doc, separators=(",", ":")))
    slot(doc, (_FILLER * (pad // len(_FILLER) + 1))[: max(pad, 0)])
    return json.dumps(doc, separators=(",", ":")).encode()


def request_body(stream: bool, n: int = 0, size: int = REQUEST_SIZE) -> bytes:
    """A chat completion request of about `size` bytes; `n` makes it unique (record path)."""
    doc = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": ""}, {"role": "user", "content": f"q{n}"}],
        "temperature": 0,
        "stream": stream,
    }
    return _padded(doc, lambda d, s: d["messages"][0].__setitem__("content", s), size)


def json_response(size: int = RESPONSE_SIZE) -> bytes:
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 900, "completion_tokens": 3500, "total_tokens": 4400},
    }
    return _padded(doc, lambda d, s: d["choices"][0]["message"].__setitem__("content", s), size)


def sse_chunks(events: int = SSE_EVENTS) -> list[bytes]:
    """An OpenAI chat stream: `events` deltas, then `[DONE]`; one chunk per event."""
    chunks = []
    for i in range(events):
        delta = {"content": f" token{i}"} if i else {"role": "assistant", "content": ""}
        event = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "gpt-4o-mini",
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        }
        chunks.append(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
    return [*chunks, b"data: [DONE]\n\n"]


JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"application/json"),
    (b"openai-processing-ms", b"420"),
    (b"x-request-id", b"req_bench"),
)
SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"openai-processing-ms", b"120"),
    (b"x-request-id", b"req_bench"),
)


def is_stream_request(body: bytes) -> bool:
    return b'"stream":true' in body


# -- the load client --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where requests go: through the proxy at `proxy_port` to https://host:port."""

    proxy_port: int
    host: str
    port: int
    ca: Path
    #: The request line's path and the headers sent (another provider's API, section streams).
    path: str = PATH
    headers: tuple[tuple[str, str], ...] = CLIENT_HEADERS


@dataclass
class Result:
    status: int
    cache: str  # the x-provider-cache header, "" when absent
    size: int
    ttfb: float  # request written -> first body byte
    latency: float  # request written -> last body byte


@dataclass
class Window:
    """What one measurement window saw."""

    requests: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    cache: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)
    client_cpu: float = 0.0
    proxy_cpu: float = 0.0


def client_context(ca: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(alpn or ["http/1.1"])  # as httpx and the SDKs offer by default
    return context


async def open_tunnel(
    t: Target, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the target through the proxy's CONNECT tunnel."""
    reader, writer = await asyncio.open_connection("127.0.0.1", t.proxy_port)
    authority = f"{t.host}:{t.port}"
    writer.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"CONNECT refused: {head[:40]!r}")
    await writer.start_tls(context, server_hostname=t.host)
    return reader, writer


class Connection:
    """One keep-alive HTTPS connection through the proxy's CONNECT tunnel."""

    def __init__(self, target: Target, context: ssl.SSLContext):
        self.target = target
        self.context = context
        authority = f"{target.host}:{target.port}" if target.port != 443 else target.host
        self.prefix = f"POST {target.path} HTTP/1.1\r\nhost: {authority}\r\n".encode()
        self.prefix += b"".join(f"{k}: {v}\r\n".encode() for k, v in target.headers)

    async def open(self) -> Connection:
        self.reader, self.writer = await open_tunnel(self.target, self.context)
        return self

    async def request(self, body: bytes) -> Result:
        self.writer.write(self.prefix + b"content-length: %d\r\n\r\n" % len(body) + body)
        start = time.perf_counter()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:-2]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            size, first = await self._sized(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            size, first = await self._chunked()
        else:
            raise ConnectionError("response without a length")
        end = time.perf_counter()
        cache = headers.get(b"x-provider-cache", b"").decode()
        return Result(status, cache, size, (first or end) - start, end - start)

    async def _sized(self, length: int) -> tuple[int, float | None]:
        if not length:
            return 0, None
        got = len(await self.reader.read(length))
        first = time.perf_counter()
        if got < length:
            await self.reader.readexactly(length - got)
        return length, first

    async def _chunked(self) -> tuple[int, float | None]:
        size, first = 0, None
        while True:
            line = await self.reader.readuntil(b"\r\n")
            n = int(line.split(b";", 1)[0], 16)
            if n == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers expected
                return size, first
            await self.reader.readexactly(n + 2)
            first = first or time.perf_counter()
            size += n

    def close(self) -> None:
        self.writer.close()


async def first_answer(
    target: Target, body: bytes, timeout: float, alive: Callable[[], bool]
) -> Result:
    """Poll until a request through the proxy is answered (start-up time); the Result."""
    deadline = time.monotonic() + timeout
    context = client_context(target.ca)
    while time.monotonic() < deadline and alive():
        try:
            conn = await Connection(target, context).open()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.01)
            continue
        try:
            return await conn.request(body)
        finally:
            conn.close()
    raise TimeoutError("no answer through the proxy")


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
