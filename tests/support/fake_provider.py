"""A local HTTPS stand-in for LLM providers (OpenAI, Anthropic) built on the stdlib only.

The proxy under test records and replays upstream traffic, so tests need an upstream that is
deterministic (answers derive from the request), observable (every request is logged), and
able to misbehave on demand (errors, cut streams, lingering streams). Answers carry the
per-request counter in their ids and in ``x-fake-served`` so a test can tell whether a response
came from upstream or from the cache.

Misbehaviour is selected by the ``model`` field of the JSON body:

* ``fail-500`` / ``rate-429``: provider-style error bodies (429 carries ``retry-after: 0``).
* ``cut-stream``: two SSE events, then the TCP connection is shut down mid-body.
* ``linger``: full SSE stream, then a 3 s pause before the terminating zero-length chunk.
* ``slow``: 0.5 s between SSE events regardless of ``chunk_delay``.
* ``cut-json``: a JSON response cut short: content-length 4096, a few bytes, then a reset.
* ``hang``: no answer at all, until the fake shuts down (or 30 s pass).

``answer_headers`` adds headers to every answer (Set-Cookie, openai-organization, …), and
``/v1/echo`` answers with the request it got, secrets included, as a careless gateway would.

Beyond OpenAI chat and Anthropic it speaks, with the faults of tests/support/fake_formats.py
(the model name again, or Bedrock's model id in the path): OpenAI Responses (`/v1/responses`),
Azure OpenAI chat (`/openai/deployments/D/chat/completions`, on AZURE_HOST), Bedrock
(`/model/ID/converse`, `converse-stream`, `invoke-with-response-stream`: AWS event
streams), Gemini (`/v1beta/models/M:generateContent`, `:streamGenerateContent` with
`alt=sse` or as a JSON array) and Ollama (`/api/chat`: NDJSON). ``chunk_delay`` paces every
stream; ``stream_encoding`` (e.g. "gzip") content-encodes them, flushed per event.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import re
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import brotli

try:  # zstd lives in the stdlib from 3.14; the venv ships the backport.
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

from tests.support import fake_formats as formats
from tests.support.certs import TestPKI, make_test_ca

CREATED = 1700000000
#: An Azure OpenAI resource the fake stands in for (the certificate names *.openai.azure.com).
AZURE_HOST = "fake-resource.openai.azure.com"
#: Azure OpenAI's chat path: the deployment in the path, the api-version in the query.
AZURE_CHAT = re.compile(r"/openai/deployments/[^/]+/chat/completions")
LINGER_SECONDS = 3.0
HANG_SECONDS = 30.0
SLOW_DELAY = 0.5
MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")

JSON = dict[str, Any]

# Content-Encoding name -> (compress, decompress); shared by responses and request inspection.
CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "gzip": (gzip.compress, gzip.decompress),
    "deflate": (zlib.compress, zlib.decompress),
    "br": (brotli.compress, brotli.decompress),
    "zstd": (zstd.compress, zstd.decompress),
}

DECODE_ERRORS = (OSError, EOFError, zlib.error, brotli.error, zstd.ZstdError)


class BadRequest(Exception):
    """The request cannot be understood; answered with a 400 instead of a server traceback."""


# ---------------------------------------------------------------------------------------------
# Pure helpers: request parsing and deterministic payloads
# ---------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Flatten message content that is either a string or a list of typed blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b["text"] for b in content if isinstance(b, dict) and "text" in b)
    return ""


def _last_content(messages: list[JSON], role: str | None = None) -> str:
    for message in reversed(messages):
        if role is None or message.get("role") == role:
            return _text_of(message.get("content"))
    return ""


def _pieces(answer: str) -> list[str]:
    """Split an answer into per-word stream deltas whose concatenation is the answer."""
    words = answer.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


def _embedding(text: str) -> list[float]:
    """Eight floats from sha256(text); multiples of 1/128 so float32/base64 round-trips exactly."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(byte - 128) / 128 for byte in digest[:8]]


def _multipart_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Parse multipart/form-data by hand so binary file parts stay byte-exact."""
    params = dict(part.strip().split("=", 1) for part in content_type.split(";")[1:] if "=" in part)
    boundary = params.get("boundary", "").strip('"')
    if not content_type.startswith("multipart/form-data") or not boundary:
        raise BadRequest("expected multipart/form-data with a boundary")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = _disposition(head.decode("utf-8", "replace"))
        fields[disposition.get("name", "")] = (disposition.get("filename"), data[:-2])
    return fields


def _disposition(head: str) -> dict[str, str]:
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            items = (item.strip().split("=", 1) for item in value.split(";")[1:])
            return {k.lower(): v.strip('"') for k, v in (i for i in items if len(i) == 2)}
    return {}


def _sse(data: JSON | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


# OpenAI payloads ------------------------------------------------------------------------------


def _openai_error(message: str, kind: str, code: str | None = None) -> JSON:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _openai_usage(prompt: str, answer: str) -> JSON:
    prompt_tokens, completion_tokens = len(prompt.split()), len(answer.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _chat_completion(served: int, model: str, prompt: str, answer: str) -> JSON:
    return {
        "id": f"chatcmpl-{served}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_usage(prompt, answer),
    }


def _chat_chunk(served: int, model: str, delta: JSON, finish: str | None) -> JSON:
    return {
        "id": f"chatcmpl-{served}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _chat_stream_events(served: int, body: JSON, prompt: str, answer: str) -> list[bytes]:
    model = body.get("model", "")
    deltas: list[JSON] = [{"content": piece} for piece in _pieces(answer)]
    deltas[0]["role"] = "assistant"
    chunks = [_chat_chunk(served, model, delta, None) for delta in deltas]
    chunks.append(_chat_chunk(served, model, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage_chunk = _chat_chunk(served, model, {}, None)
        usage_chunk.update(choices=[], usage=_openai_usage(prompt, answer))
        chunks.append(usage_chunk)
    return [*(_sse(chunk) for chunk in chunks), _sse("[DONE]")]


# Anthropic payloads ---------------------------------------------------------------------------


def _anthropic_error(message: str, kind: str) -> JSON:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _anthropic_message(served: int, model: str, prompt: str, answer: str) -> JSON:
    return {
        "id": f"msg_{served}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": answer}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": len(prompt.split()), "output_tokens": len(answer.split())},
    }


def _anthropic_stream_events(served: int, model: str, prompt: str, answer: str) -> list[bytes]:
    start = _anthropic_message(served, model, prompt, answer)
    start.update(content=[], stop_reason=None)
    start["usage"]["output_tokens"] = 1
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in _pieces(answer)
    ]
    return [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        *(_sse(delta, "content_block_delta") for delta in deltas),
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(answer.split())},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]


# ---------------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """One TLS connection; dispatches each keep-alive request to a route method."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections eventually free their thread
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms stalls
    server: _Server
    _served: int | None = None
    _raw_body: bytes = b""

    # -- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr lines; tests inspect ``FakeProvider.requests``."""

    def parse_request(self) -> bool:
        self._served = None  # a malformed follow-up request must not reuse the last counter
        return super().parse_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if self._served is not None:
            self.send_header("x-fake-served", str(self._served))
        for name, value in self.server.provider.answer_headers:
            self.send_header(name, value)

    def _dispatch(self) -> None:
        try:
            self._raw_body = self._read_body()
        except BadRequest as exc:
            self.close_connection = True
            self._send_json(400, _openai_error(str(exc), "invalid_request_error"))
            return
        self._served = self.server.provider._record(
            self.command, self.path, list(self.headers.items()), self._raw_body
        )
        if failure := self.server.provider._next_failure():
            status, headers = failure
            self._send_json(status, _openai_error("scripted failure", "server_error"), headers)
            return
        url = urlsplit(self.path)
        route = self._route(url.path)
        try:
            route(url.path, url.query)
        except BadRequest as exc:
            self._send_json(400, _openai_error(str(exc), "invalid_request_error"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_PROPFIND = do_PURGE = _dispatch

    def _route(self, path: str) -> Callable[[str, str], None]:
        routes: dict[tuple[str, str], Callable[[str, str], None]] = {
            ("POST", "/v1/chat/completions"): self._chat_completions,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/files"): self._files,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/api/chat"): self._ollama_chat,
            ("GET", "/v1/echo"): self._echo,
            ("POST", "/v1/echo"): self._echo,
        }
        if self.command in ("GET", "POST") and path.startswith("/status/"):
            return self._status
        if self.command == "POST" and path.startswith("/model/"):
            return self._bedrock
        if self.command == "POST" and AZURE_CHAT.fullmatch(path):
            return self._chat_completions
        if self.command == "POST" and "/models/" in path and ":" in path:
            return self._gemini
        return routes.get((self.command, path), self._not_found)

    # -- request body -----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise BadRequest(f"bad Content-Length {length!r}")
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadRequest(f"bad chunk size {size_line!r}") from None
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # CRLF after the chunk data
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # discard trailers
        return b"".join(parts)

    def _decoded_body(self) -> bytes:
        """The body with any Content-Encoding undone, for inspection only."""
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return self._raw_body
        if encoding not in CODECS:
            raise BadRequest(f"unsupported request Content-Encoding {encoding!r}")
        try:
            return CODECS[encoding][1](self._raw_body)
        except DECODE_ERRORS as exc:
            raise BadRequest(f"body is not valid {encoding}: {exc}") from None

    def _json_body(self) -> JSON:
        try:
            body = json.loads(self._decoded_body() or b"{}")
        except ValueError as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("JSON body must be an object")
        return body

    # -- response writing -------------------------------------------------------------------

    def _send_bytes(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status not in (204, 304):
            self.wfile.write(body)

    def _send_json(self, status: int, obj: JSON, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json", headers)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(
        self,
        events: list[bytes],
        model: str,
        content_type: str = formats.SSE_TYPE,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send events (SSE events, event-stream frames, lines, array pieces) as individual
        HTTP chunks, applying the model's misbehaviour."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        encoding = self.server.provider.stream_encoding
        compressor = zlib.compressobj(wbits=31) if encoding == "gzip" else None
        if encoding:
            assert compressor is not None, f"stream_encoding {encoding!r}: only gzip"
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        delay = SLOW_DELAY if model == "slow" else self.server.provider.chunk_delay
        sent = self.server.provider._stream_started()
        for index, event in enumerate(events):
            if model in ("cut-stream", "cut-frame") and index == 2:
                if model == "cut-frame":  # half of the third event, frame or line
                    sent += event[: len(event) // 2]
                    self._write_chunk(event[: len(event) // 2])
                self._cut_connection()
                return
            if index and delay:
                time.sleep(delay)
            sent += event
            if compressor is not None:
                event = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
            self._write_chunk(event)
        if model == "linger":
            time.sleep(LINGER_SECONDS)
        if compressor is not None:
            self._write_chunk(compressor.flush())
        self._write_chunk(b"")

    def _cut_connection(self) -> None:
        """Drop TCP without TLS close_notify or the final chunk, so the peer sees a broken body."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _error_for_model(self, model: str, error: Callable[[str, str], JSON]) -> bool:
        """Answer the error models; returns True when the request has been answered."""
        if model == "fail-500":
            self._send_json(500, error("fake upstream failure", "server_error"))
        elif model == "rate-429":
            body = error("fake rate limit", "rate_limit_error")
            self._send_json(429, body, {"retry-after": "0"})
        else:
            return False
        return True

    # -- routes -----------------------------------------------------------------------------

    def _not_found(self, path: str, query: str) -> None:
        message = f"no route for {self.command} {path}"
        self._send_json(404, _openai_error(message, "invalid_request_error", "not_found"))

    def _chat_completions(self, path: str, query: str) -> None:
        body = self._json_body()
        model = str(body.get("model", ""))
        if self._error_for_model(model, _openai_error_for_kind):
            return
        prompt = _last_content(body.get("messages") or [])
        answer = "echo: " + prompt
        assert self._served is not None
        if model == "cut-json":  # promise a long body, send a little, drop the connection
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "4096")
            self.end_headers()
            self.wfile.write(b'{"id": "partial", "choices": [')
            self.wfile.flush()
            self._cut_connection()
            return
        if model == "hang":  # accept the request and never answer (until the fake shuts down)
            deadline = time.monotonic() + HANG_SECONDS
            while not self.server.provider.closing and time.monotonic() < deadline:
                time.sleep(0.05)
            self._cut_connection()
            return
        if body.get("stream"):
            self._stream(_chat_stream_events(self._served, body, prompt, answer), model)
        else:
            self._send_json(200, _chat_completion(self._served, model, prompt, answer))

    def _embeddings(self, path: str, query: str) -> None:
        body = self._json_body()
        raw_inputs = body.get("input", "")
        inputs = raw_inputs if isinstance(raw_inputs, list) else [raw_inputs]
        data = []
        for index, item in enumerate(inputs):
            vector: list[float] | str = _embedding(
                item if isinstance(item, str) else json.dumps(item)
            )
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(str(item).split()) for item in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._send_json(
            200, {"object": "list", "data": data, "model": body.get("model", ""), "usage": usage}
        )

    def _files(self, path: str, query: str) -> None:
        fields = _multipart_fields(self.headers.get("Content-Type", ""), self._decoded_body())
        if "file" not in fields:
            raise BadRequest("multipart body has no 'file' part")
        filename, content = fields["file"]
        purpose = fields.get("purpose", (None, b""))[1].decode()
        file_object = {
            "id": f"file-{self._served}",
            "object": "file",
            "bytes": len(content),
            "created_at": CREATED,
            "filename": filename or "upload",
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        self._send_json(200, file_object)

    def _models(self, path: str, query: str) -> None:
        listing = {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": CREATED, "owned_by": "fake-provider"}
                for name in MODELS
            ],
        }
        pad = int(parse_qs(query).get("pad", ["0"])[0])  # bytes of white space: a bomb, gzipped
        body = json.dumps(listing).encode() + b" " * pad
        encoding = parse_qs(query).get("encoding", [""])[0]
        if not encoding:
            self._send_bytes(200, body, "application/json")
        elif encoding in CODECS:
            compressed = CODECS[encoding][0](body)
            headers = {"Content-Encoding": encoding, "Vary": "Accept-Encoding"}
            self._send_bytes(200, compressed, "application/json", headers)
        else:
            raise BadRequest(f"unknown encoding {encoding!r}")

    def _messages(self, path: str, query: str) -> None:
        body = self._json_body()
        model = str(body.get("model", ""))
        if self._error_for_model(model, _anthropic_error_for_kind):
            return
        prompt = _last_content(body.get("messages") or [], role="user")
        answer = "echo: " + prompt
        assert self._served is not None
        if body.get("stream"):
            self._stream(_anthropic_stream_events(self._served, model, prompt, answer), model)
        else:
            self._send_json(200, _anthropic_message(self._served, model, prompt, answer))

    def _responses(self, path: str, query: str) -> None:
        """OpenAI's Responses API, as a JSON object or an SSE stream (`event:` names)."""
        body = self._json_body()
        model = str(body.get("model", ""))
        if self._error_for_model(model, _openai_error_for_kind):
            return
        prompt = formats.responses_prompt(body)
        answer = "echo: " + prompt
        assert self._served is not None
        if body.get("stream"):
            self._stream(
                formats.responses_stream(self._served, model, prompt, answer, model), model
            )
        else:
            self._send_json(200, formats.response_object(self._served, model, prompt, answer))

    def _bedrock(self, path: str, query: str) -> None:
        """Bedrock runtime: `/model/ID/OPERATION`; the streams are AWS event streams."""
        model_id, _, operation = path.removeprefix("/model/").rpartition("/")
        model = unquote(model_id)
        body = self._json_body()
        if self._error_for_model(model, lambda message, kind: {"message": message}):
            return
        prompt = formats.bedrock_prompt(body)
        answer = "echo: " + prompt
        assert self._served is not None
        if operation == "converse":
            self._send_json(200, formats.converse(prompt, answer))
        elif operation == "converse-stream":
            events = formats.converse_stream(prompt, answer, model)
            self._stream(events, model, formats.EVENT_STREAM_TYPE)
        elif operation == "invoke-with-response-stream":
            events = formats.invoke_stream(self._served, model, prompt, answer, model)
            bedrock_type = {"x-amzn-bedrock-content-type": "application/json"}
            self._stream(events, model, formats.EVENT_STREAM_TYPE, bedrock_type)
        else:
            self._not_found(path, query)

    def _gemini(self, path: str, query: str) -> None:
        """`/v1beta/models/M:generateContent`, `:streamGenerateContent` (`alt=sse`: SSE;
        without: a JSON array streamed in pieces)."""
        name, _, method = path.rpartition(":")
        model = name.rsplit("/", 1)[-1]
        prompt = formats.gemini_prompt(self._json_body())
        answer = "echo: " + prompt
        assert self._served is not None
        chunks = formats.gemini_chunks(self._served, model, prompt, answer, model)
        if method == "generateContent":
            whole = formats.gemini_chunk(self._served, model, answer, True, prompt)
            self._send_json(200, whole)
        elif method == "streamGenerateContent" and parse_qs(query).get("alt") == ["sse"]:
            events = [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]
            self._stream(events, model)
        elif method == "streamGenerateContent":
            pieces = formats.gemini_array(chunks, model)
            self._stream(pieces, model, "application/json; charset=UTF-8")
        else:
            self._not_found(path, query)

    def _ollama_chat(self, path: str, query: str) -> None:
        """Ollama's `/api/chat`: NDJSON lines when streaming (its default), else one object."""
        body = self._json_body()
        model = str(body.get("model", ""))
        answer = "echo: " + _last_content(body.get("messages") or [], role="user")
        lines = formats.ollama_lines(model, answer, model)
        if body.get("stream", True):
            self._stream(lines, model, formats.NDJSON_TYPE)
        else:
            whole = json.loads(lines[-1]) | {"message": {"role": "assistant", "content": answer}}
            self._send_json(200, whole)

    def _echo(self, path: str, query: str) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        echoed = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": headers,
            "body": self._decoded_body().decode("utf-8", "replace"),
        }
        self._send_json(200, echoed)

    def _status(self, path: str, query: str) -> None:
        code_text = path.removeprefix("/status/")
        if not code_text.isdigit() or not 200 <= int(code_text) <= 599:
            raise BadRequest(f"status must be 200..599, got {code_text!r}")
        code = int(code_text)
        self._send_json(code, {"status": code, "served": self._served})


def _openai_error_for_kind(message: str, kind: str) -> JSON:
    code = "rate_limit_exceeded" if kind == "rate_limit_error" else None
    return _openai_error(message, "requests" if code else kind, code)


def _anthropic_error_for_kind(message: str, kind: str) -> JSON:
    return _anthropic_error(message, "api_error" if kind == "server_error" else kind)


# Errors a client can legitimately cause by hanging up or distrusting our certificate.
_CLIENT_GONE = (ConnectionError, TimeoutError, ssl.SSLError)


class _Server(ThreadingHTTPServer):
    """Threaded server that does the TLS handshake in the connection thread, not in accept()."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, provider: FakeProvider, context: ssl.SSLContext, port: int = 0) -> None:
        self.provider = provider
        self.ssl_context = context
        self._live: set[ssl.SSLSocket] = set()
        self._live_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except OSError:  # includes ssl.SSLError and timeouts
            return  # failed handshake: nothing to serve; the raw socket is already closed
        with self._live_lock:
            self._live.add(conn)
        try:
            _Handler(conn, client_address, self)  # RequestHandlerClass, as mypy can type it
        finally:
            with self._live_lock:
                self._live.discard(conn)
            _close_quietly(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients hanging up; record and print anything else."""
        exc = sys.exception()
        if isinstance(exc, _CLIENT_GONE) or self.provider.closing:
            return
        if exc is not None:
            self.provider.errors.append(exc)
        super().handle_error(request, client_address)

    def close_live_connections(self) -> None:
        with self._live_lock:
            live = list(self._live)
        for conn in live:
            _shutdown_quietly(conn)


def _shutdown_quietly(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already disconnected
        conn.shutdown(socket.SHUT_RDWR)


def _close_quietly(conn: socket.socket) -> None:
    _shutdown_quietly(conn)
    conn.close()


class FakeProvider:
    """Context manager running the fake provider on ``https://localhost:<port>``.

    ``requests`` holds ``{"method", "path", "headers", "body"}`` dicts (raw bytes body, headers as
    a list of pairs, path including the query string), appended under a lock by server threads.
    ``errors`` collects unexpected exceptions raised inside handlers (should stay empty).
    """

    def __init__(self, directory: Path, *, pki: TestPKI | None = None, port: int = 0) -> None:
        self.directory = directory
        self.pki = pki
        self._listen_port = port  # 0, the tests' choice: a free port
        self.chunk_delay = 0.0
        #: A content coding for every stream ("gzip"), flushed after each event.
        self.stream_encoding = ""
        #: Scripted failures: each request answers the next (status, headers) instead, in order.
        self.fail_next: list[tuple[int, dict[str, str]]] = []
        #: Headers every answer carries, as real providers send Set-Cookie or openai-organization.
        self.answer_headers: list[tuple[str, str]] = []
        self.served = 0
        self.requests: list[JSON] = []
        #: Each stream's body as sent (before any stream_encoding), in order; grows as it goes.
        self.streamed: list[bytearray] = []
        self.errors: list[BaseException] = []
        self.closing = False
        self.port = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def ca_path(self) -> Path:
        assert self.pki is not None, "FakeProvider not started"
        return self.pki.ca_path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the test CA (httpx/httpx2 deprecate verify=<path>)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def _next_failure(self) -> tuple[int, dict[str, str]] | None:
        """The next scripted failure, if a test queued any in `fail_next`."""
        with self._lock:
            return self.fail_next.pop(0) if self.fail_next else None

    def _stream_started(self) -> bytearray:
        with self._lock:
            self.streamed.append(bytearray())
            return self.streamed[-1]

    def _record(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> int:
        with self._lock:
            self.served += 1
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
            return self.served

    def __enter__(self) -> Self:
        if self.pki is None:
            self.pki = make_test_ca(self.directory / "fake-provider-pki")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.cert_path, self.pki.key_path)
        context.set_alpn_protocols(["http/1.1"])
        self._server = _Server(self, context, self._listen_port)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._thread is not None
        self.closing = True
        self._server.shutdown()
        self._server.server_close()
        self._server.close_live_connections()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# By hand: python -m tests.support.fake_provider (the README's offline walk-through, ./dev demo)
# ---------------------------------------------------------------------------------------------

#: The provider hosts a proxy can send here (its certificate names them).
STAND_IN_FOR = (
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    AZURE_HOST,
)
RESOLVE_ADDON = Path(__file__).with_name("resolve.py")


def proxy_arguments(port: int, ca_path: Path) -> list[str]:
    """The mitmdump arguments that send the provider hosts here and trust this fake's CA."""
    arguments = ["-s", str(RESOLVE_ADDON), "--set", f"ssl_verify_upstream_trusted_ca={ca_path}"]
    for host in STAND_IN_FOR:
        arguments += ["--set", f"test_resolve={host}=127.0.0.1:{port}"]
    return arguments


def _main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; exit 2 with one line when the port is taken."""
    import argparse
    import shlex
    import signal
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_provider",
        description="The tests' fake OpenAI/Anthropic provider on 127.0.0.1, until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8443, help="0 takes a free port")
    parser.add_argument("--dir", type=Path, help="where its throwaway CA goes (default: temp)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with contextlib.ExitStack() as cleanup:
        directory = args.dir or Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fake-provider-"))
        )
        provider = FakeProvider(directory, port=args.port)
        try:
            cleanup.enter_context(provider)
        except OSError as e:
            print(
                f"fake provider: cannot listen on 127.0.0.1:{args.port}: {e.strerror}",
                file=sys.stderr,
            )
            return 2
        print(f"fake provider: {provider.base_url} (as {', '.join(STAND_IN_FOR)})")
        print(f"CA certificate: {provider.ca_path}")
        print(f"proxy arguments: {shlex.join(proxy_arguments(provider.port, provider.ca_path))}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(_main())
