"""The openai SDK's realtime client through a real mitmdump (SPEC §13, issue 17 item 4).

The SDK opens its WebSocket with the `websockets` library, which honours HTTPS_PROXY (from
version 15) and, through `ssl.create_default_context()`, SSL_CERT_FILE: the README's
variables alone point it at the proxy, no SDK option needed. The provider is the fake
WebSocket provider (tests/support/fake_ws.py); replay runs with it unreachable.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from openai.types.realtime import RealtimeConversationItemUserMessageParam
from websockets.exceptions import ConnectionClosedError

from provider_cache.core import wsmatch, wsrecords
from provider_cache.core.records import unpack_valid
from provider_cache.storage.store import Store
from tests.support.fake_ws import FakeWebSocketProvider
from tests.support.proxy import Mitmdump, free_port
from tests.support.secrets import OPENAI_KEY

MODEL = "gpt-realtime"
AUDIO = base64.b64encode(bytes(range(256)) * 4).decode()
#: The last server event of an answer (GA realtime; the beta client gets the same).
DONE = "response.done"

#: The sync clients (openai/resources/realtime/realtime.py `_connect_ws`: `return connect(`,
#: and beta/realtime/realtime.py likewise) call websockets' sync connect() outside a `with`,
#: which websockets 17.1 deprecates: the SDK's warning, not the proxy's.
pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)


def user_item(text: str) -> RealtimeConversationItemUserMessageParam:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeWebSocketProvider]:
    with FakeWebSocketProvider(tmp_path / "fake-ws") as provider:
        yield provider
    assert not provider.errors, provider.errors


@pytest.fixture
def proxy(
    tmp_path: Path, fake: FakeWebSocketProvider, use_proxy: Callable[[Mitmdump], None]
) -> Iterator[Callable[..., Mitmdump]]:
    """Start mitmdump with the addon and point this process's clients at it (env only)."""
    started: list[Mitmdump] = []

    def start(mode: str = "record", *, offline: bool = False) -> Mitmdump:
        mitmdump = Mitmdump(
            workdir=tmp_path,
            cache_dir=tmp_path / "cache",
            options={"cache_mode": mode},
            resolve={"api.openai.com": free_port() if offline else fake.port},
            upstream_ca=fake.ca_path,
        )
        started.append(mitmdump)
        use_proxy(mitmdump.start())
        return mitmdump

    yield start
    for mitmdump in started:
        mitmdump.stop()


def client() -> openai.OpenAI:
    return openai.OpenAI(max_retries=0)


def converse(text: str = "hello") -> list[dict]:
    """A short conversation: session update, a user item, audio appended and committed,
    then a response read to its end; every server event as the SDK parsed it."""
    got = []
    with client() as sdk, sdk.realtime.connect(model=MODEL) as conn:
        got.append(conn.recv())
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        got.append(conn.recv())
        conn.conversation.item.create(item=user_item(text))
        got.append(conn.recv())
        conn.input_audio_buffer.append(audio=AUDIO)
        conn.input_audio_buffer.commit()
        got.append(conn.recv())
        conn.response.create()
        for event in conn:
            got.append(event)
            if event.type == DONE:
                break
    return [event.model_dump() for event in got]


async def converse_async(text: str = "hello") -> list[dict]:
    """The same conversation with AsyncOpenAI (websockets' asyncio client)."""
    got = []
    async with openai.AsyncOpenAI(max_retries=0) as sdk, sdk.realtime.connect(model=MODEL) as conn:
        got.append(await conn.recv())
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        got.append(await conn.recv())
        await conn.conversation.item.create(item=user_item(text))
        got.append(await conn.recv())
        await conn.input_audio_buffer.append(audio=AUDIO)
        await conn.input_audio_buffer.commit()
        got.append(await conn.recv())
        await conn.response.create()
        async for event in conn:
            got.append(event)
            if event.type == DONE:
                break
    return [event.model_dump() for event in got]


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def stats(mitmdump: Mitmdump) -> dict:
    return json.loads((mitmdump.cache_dir / "stats.json").read_text())


def sessions(cache_dir: Path) -> list:
    with Store(cache_dir, readonly=True) as store:
        entries = list(unpack_valid(store.scan(stop=lambda: False)))
    return [e for e in entries if wsrecords.is_session(e)]


def test_a_realtime_conversation_recorded_replays_offline_event_for_event(proxy, fake):
    recording = proxy("record")
    recorded = converse()
    recording.stop()
    assert types(recorded) == [
        "session.created",
        "session.updated",
        "conversation.item.created",
        "input_audio_buffer.committed",
        "response.created",
        *["response.output_text.delta"] * 3,
        DONE,
    ]
    assert recorded[0]["session"]["id"] == "sess_1"  # the provider's first connection
    assert fake.connections == 1
    (entry,) = sessions(recording.cache_dir)
    assert entry.response.status == 101
    assert (stats(recording)["misses"], stats(recording)["recorded"]) == (1, 1)

    replaying = proxy("replay", offline=True)
    assert converse() == recorded
    replaying.stop()
    assert fake.connections == 1  # the provider was never asked again
    assert (stats(replaying)["hits"], stats(replaying)["misses"]) == (1, 0)


def test_the_async_client_replays_what_the_sync_client_recorded(proxy, fake):
    recording = proxy("record")
    recorded = converse()
    recording.stop()
    replaying = proxy("replay", offline=True)
    assert asyncio.run(converse_async()) == recorded
    replaying.stop()
    assert fake.connections == 1


def test_the_key_the_sdk_sends_is_redacted_in_the_recorded_handshake(proxy, fake):
    """The conftest scans every written byte for the key; here the handshake names it."""
    recording = proxy("record")
    converse()
    recording.stop()
    assert fake.handshakes[0][1]["authorization"] == f"Bearer {OPENAI_KEY}"  # it was sent
    (entry,) = sessions(recording.cache_dir)
    headers = {name.lower(): value for name, value in entry.request.headers}
    assert headers[b"authorization"] == b"<redacted>"


def test_a_conversation_that_diverges_ends_the_sdk_session_with_the_miss(proxy, fake):
    recording = proxy("record")
    converse("hello")
    recording.stop()
    replaying = proxy("replay", offline=True)
    with pytest.raises(ConnectionClosedError) as closed:
        converse("goodbye")
    replaying.stop()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == wsmatch.DIVERGED_CODE
    assert "client message 1" in closed.value.rcvd.reason  # the item, after session.update
    counts = stats(replaying)
    assert (counts["hits"], counts["misses"]) == (0, 1)
    (missed,) = counts["missed"]
    assert missed["closest"]["differences"] == [
        'client message 1: $.item.content[0].text: "hello" → "goodbye"'
    ]
    assert fake.connections == 1


def test_the_beta_realtime_client_records_and_replays_too(proxy, fake):
    def beta() -> list[dict]:
        with client() as sdk, sdk.beta.realtime.connect(model=MODEL) as conn:
            got = [conn.recv()]
            conn.session.update(session={"modalities": ["text"]})
            got.append(conn.recv())
            conn.response.create()
            for event in conn:
                got.append(event)
                if event.type == DONE:
                    break
        return [event.model_dump() for event in got]

    recording = proxy("record")
    recorded = beta()
    recording.stop()
    assert fake.handshakes[0][1]["openai-beta"] == "realtime=v1"
    assert types(recorded)[-1] == DONE
    replaying = proxy("replay", offline=True)
    assert beta() == recorded
    replaying.stop()
    assert fake.connections == 1
