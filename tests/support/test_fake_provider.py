"""Direct tests of the fake provider (no proxy), so proxy test failures can trust their upstream."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.support.fake_provider import CODECS, FakeProvider


@pytest.fixture
def fp(tmp_path: Path) -> Iterator[FakeProvider]:
    with FakeProvider(tmp_path) as provider:
        yield provider


@pytest.fixture
def http(fp: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fp.base_url, verify=fp.client_ssl_context()) as client:
        yield client


@pytest.fixture
def oai(fp: FakeProvider) -> Iterator[openai.OpenAI]:
    http_client = openai.DefaultHttpxClient(verify=fp.client_ssl_context())
    with openai.OpenAI(
        api_key="sk-test", base_url=f"{fp.base_url}/v1", max_retries=0, http_client=http_client
    ) as client:
        yield client


@pytest.fixture
def claude(fp: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> Iterator[anthropic.Anthropic]:
    """Uses SSL_CERT_FILE rather than http_client, to cover the env-var route to a custom CA."""
    monkeypatch.setenv("SSL_CERT_FILE", str(fp.ca_path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with anthropic.Anthropic(api_key="sk-ant-test", base_url=fp.base_url, max_retries=0) as client:
        yield client


def _chat(content: str, model: str = "gpt-4o-mini", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# --- OpenAI SDK ----------------------------------------------------------------------------------


def test_openai_chat_non_stream(oai: openai.OpenAI, fp: FakeProvider) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert completion.id == "chatcmpl-1"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert fp.requests[0]["method"] == "POST"
    assert json.loads(fp.requests[0]["body"])["messages"][0]["content"] == "hello there"


def test_openai_chat_stream(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == ["echo:", " one", " two", " three"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {"chatcmpl-1"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_openai_embeddings(oai: openai.OpenAI) -> None:
    first = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    again = oai.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="base64"
    )
    vectors = [item.embedding for item in first.data]
    assert len(vectors) == 2 and all(len(v) == 8 for v in vectors)
    assert vectors[0] != vectors[1]
    assert isinstance(again.data[0].embedding, str)  # SDK leaves base64 undecoded when asked


def test_openai_file_upload(oai: openai.OpenAI, fp: FakeProvider) -> None:
    payload = b"\x00\r\n--not-a-boundary\r\n" + bytes(range(256)) * 10
    uploaded = oai.files.create(file=("data.jsonl", payload), purpose="batch")
    assert uploaded.bytes == len(payload)
    assert uploaded.filename == "data.jsonl"
    assert uploaded.purpose == "batch"


def test_openai_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        oai.chat.completions.create(**_chat("x", model="fail-500"))  # type: ignore[call-overload]
    assert failed.value.status_code == 500
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(**_chat("x", model="rate-429"))  # type: ignore[call-overload]
    assert limited.value.response.headers["retry-after"] == "0"


def test_openai_cut_stream_raises(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="cut-stream", messages=[{"role": "user", "content": "a b c d"}], stream=True
    )
    received: list[str | None] = []
    with stream, pytest.raises(openai.APIConnectionError) as broken:
        received.extend(chunk.choices[0].delta.content for chunk in stream)
    assert received == ["echo:", " a"]
    assert isinstance(broken.value.__cause__, httpx2.RemoteProtocolError)
    assert "incomplete chunked read" in str(broken.value.__cause__)


# --- Anthropic SDK -------------------------------------------------------------------------------


def test_anthropic_message_non_stream(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi you"}]}],
    )
    assert message.id == "msg_1"
    assert [block.text for block in message.content if block.type == "text"] == ["echo: hi you"]
    assert message.stop_reason == "end_turn"


def test_anthropic_message_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "alpha beta"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["echo:", " alpha", " beta"]
    assert final.id == "msg_1"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def test_anthropic_errors(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as failed:
        claude.messages.create(
            model="fail-500", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert failed.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "fake upstream failure"},
    }
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model="rate-429", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )


def test_anthropic_cut_stream_raises(claude: anthropic.Anthropic) -> None:
    """Unlike openai, anthropic lets the transport error escape unwrapped."""
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "a b c"}]
    with (
        pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"),
        claude.messages.stream(model="cut-stream", max_tokens=8, messages=messages) as stream,
    ):
        list(stream.text_stream)


# --- raw HTTP ------------------------------------------------------------------------------------


def test_models_every_encoding_decodes_to_same_json(fp: FakeProvider) -> None:
    """httpx2 (the SDKs' transport) decodes all four codings; legacy httpx lacks zstd here."""
    with httpx2.Client(base_url=fp.base_url, verify=fp.client_ssl_context()) as client:
        plain = client.get("/v1/models")
        assert "content-encoding" not in plain.headers
        for encoding in CODECS:
            response = client.get("/v1/models", params={"encoding": encoding})
            assert response.headers["content-encoding"] == encoding
            assert response.json() == plain.json()
    assert plain.json()["object"] == "list"


def test_models_raw_bytes_are_compressed(http: httpx.Client) -> None:
    plain = http.get("/v1/models").content
    for encoding, (_, decompress) in CODECS.items():
        with http.stream("GET", "/v1/models", params={"encoding": encoding}) as response:
            raw = b"".join(response.iter_raw())
        assert raw != plain
        assert decompress(raw) == plain
        assert response.headers["content-length"] == str(len(raw))


def test_served_counter_and_request_log(http: httpx.Client, fp: FakeProvider) -> None:
    served = [http.get("/v1/models").headers["x-fake-served"] for _ in range(3)]
    assert served == ["1", "2", "3"]
    missing = http.get("/nope")
    assert missing.status_code == 404 and missing.headers["x-fake-served"] == "4"
    assert fp.served == 4
    assert [r["path"] for r in fp.requests] == ["/v1/models"] * 3 + ["/nope"]
    assert ("host", f"localhost:{fp.port}") in [
        (k.lower(), v) for k, v in fp.requests[0]["headers"]
    ]


def test_status_route(http: httpx.Client) -> None:
    assert http.get("/status/418").status_code == 418
    created = http.post("/status/201")
    assert created.status_code == 201 and created.json()["status"] == 201
    assert http.get("/status/204").content == b""


def test_echo_reflects_headers_and_decoded_gzip_body(http: httpx.Client) -> None:
    body = CODECS["gzip"][0](b'{"secret": "s3"}')
    echoed = http.post(
        "/v1/echo?a=1",
        content=body,
        headers={"Authorization": "Bearer sk-leak", "Content-Encoding": "gzip"},
    ).json()
    assert echoed["method"] == "POST" and echoed["path"] == "/v1/echo"
    assert echoed["query"] == "a=1"
    assert echoed["headers"]["authorization"] == "Bearer sk-leak"
    assert echoed["body"] == '{"secret": "s3"}'


def test_chunked_request_body(http: httpx.Client, fp: FakeProvider) -> None:
    def parts() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o-mini", "messages": '
        yield b'[{"role": "user", "content": "chunked works"}]}'

    response = http.post("/v1/chat/completions", content=parts())
    assert response.json()["choices"][0]["message"]["content"] == "echo: chunked works"
    assert ("Transfer-Encoding", "chunked") in fp.requests[0]["headers"]


def test_raw_stream_wire_format(http: httpx.Client, fp: FakeProvider) -> None:
    """Each SSE event arrives in its own HTTP chunk and the stream ends with [DONE]."""
    fp.chunk_delay = 0.01
    with http.stream("POST", "/v1/chat/completions", json=_chat("x y", stream=True)) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert len(events) == 1 + 3 + 1 + 1  # words ("echo:", "x", "y"), finish, [DONE], tail


def test_linger_keeps_stream_open_after_done(fp: FakeProvider) -> None:
    """Read up to [DONE], then observe that the body has not ended; close early to stay fast."""
    context = fp.client_ssl_context()
    request = json.dumps(_chat("z", model="linger", stream=True)).encode()
    with (
        socket.create_connection(("127.0.0.1", fp.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(request), request)
        )
        received = b""
        while b"data: [DONE]" not in received:
            received += tls.recv(65536)
        tls.settimeout(0.3)
        with pytest.raises(TimeoutError):
            tls.recv(65536)
    assert not received.endswith(b"0\r\n\r\n")


def test_concurrent_requests_are_all_logged(fp: FakeProvider) -> None:
    def worker() -> None:
        with httpx.Client(base_url=fp.base_url, verify=fp.client_ssl_context()) as client:
            for _ in range(5):
                client.get("/v1/echo")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fp.served == 20 and len(fp.requests) == 20
    assert not fp.errors
