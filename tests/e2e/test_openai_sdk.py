"""The README walk-through with the real openai SDK, configured only by environment variables."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.support import secrets
from tests.support.fake_provider import FakeProvider

MESSAGES = [{"role": "user", "content": "what is a cache"}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)


@pytest.fixture
def new_client() -> Iterator:
    """Default clients (env vars only: HTTPS_PROXY, SSL_CERT_FILE), closed after the test."""
    clients: list[openai.OpenAI] = []

    def make(**kwargs) -> openai.OpenAI:
        clients.append(openai.OpenAI(**{"max_retries": 0, **kwargs}))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def chat(client: openai.OpenAI, model: str = "gpt-4o-mini"):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    return raw.headers.get("x-provider-cache"), raw.parse()


def stream_text(client: openai.OpenAI, model: str = "gpt-4o-mini") -> tuple[str, str]:
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    return text, stream.response.headers.get("x-provider-cache")


def test_record_then_hit_through_default_client(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record"))
    client = new_client()
    (first_state, first), (second_state, second) = chat(client), chat(client)

    assert (first_state, second_state) == ("miss", "hit")
    assert first.choices[0].message.content == "echo: what is a cache"
    assert second == first  # same id: served from the cache, not upstream again
    assert fake.served == 1


def test_stream_records_then_replays_offline_identically(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record"))
    recorded = stream_text(new_client())
    first_answer = chat(new_client())[1]
    assert fake.served == 2

    # Restart in replay mode with every provider host pointing at a closed port.
    use_proxy(start_proxy("replay", offline=True))
    client = new_client()
    replayed = stream_text(client)
    replay_state, replayed_answer = chat(client)

    assert recorded == ("echo: what is a cache", "miss")
    assert replayed == ("echo: what is a cache", "hit")
    assert (replay_state, replayed_answer) == ("hit", first_answer)
    assert fake.served == 2


def test_replay_miss_is_a_clear_non_retried_error(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("replay", offline=True))
    client = new_client(max_retries=2)  # the SDK default: a miss must not be retried

    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    error = info.value
    assert 400 <= error.status_code < 500 and error.status_code not in (408, 409, 429)
    assert error.response.headers["x-provider-cache"] == "miss"
    assert error.body["type"] == "provider_cache_miss"
    assert "POST https://api.openai.com/v1/chat/completions" in error.body["message"]
    assert len(error.body["key"]) == 64 and error.body["key"] in error.body["message"]
    assert fake.served == 0


def test_stream_closed_by_sdk_after_done_is_recorded(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    """Upstream keeps the stream open after [DONE]; the SDK hangs up; the answer is complete."""
    proxy = start_proxy("record")
    use_proxy(proxy)
    first = stream_text(new_client(), model="linger")
    second = stream_text(new_client(), model="linger")
    assert first == ("echo: what is a cache", "miss")
    assert second == ("echo: what is a cache", "hit")
    assert fake.served == 1
    assert "Client disconnected" in proxy.log()  # the early hang-up really happened


def test_cut_stream_and_errors_are_not_recorded(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record"))
    client = new_client()
    for _ in range(2):
        with pytest.raises(openai.APIConnectionError):
            stream_text(client, model="cut-stream")
        with pytest.raises(openai.InternalServerError):
            chat(client, model="fail-500")
        with pytest.raises(openai.RateLimitError):
            chat(client, model="rate-429")
    assert fake.served == 6  # every attempt reached upstream: nothing was stored


def test_embeddings_and_file_upload_hit(
    start_proxy, use_proxy, new_client, fake: FakeProvider, tmp_path
) -> None:
    use_proxy(start_proxy("record"))
    upload = tmp_path / "train.jsonl"
    upload.write_bytes(b'{"prompt": "a", "completion": "b"}\n')

    results = []
    for _ in range(2):
        client = new_client()  # a new client: new connection, new multipart boundary
        emb = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi")
        with upload.open("rb") as f:
            up = client.files.with_raw_response.create(file=f, purpose="fine-tune")
        results.append(
            (
                emb.headers["x-provider-cache"],
                emb.parse(),
                up.headers["x-provider-cache"],
                up.parse(),
            )
        )

    (e1_state, e1, f1_state, f1), (e2_state, e2, f2_state, f2) = results
    assert (e1_state, f1_state, e2_state, f2_state) == ("miss", "miss", "hit", "hit")
    assert e2 == e1 and f2 == f1 and f1.bytes == upload.stat().st_size
    assert fake.served == 2
