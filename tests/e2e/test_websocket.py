"""WebSocket sessions through a real mitmdump (SPEC §13, issue 17): recorded from the fake
WebSocket provider (tests/support/fake_ws.py) and replayed offline, with the `websockets`
client library as real clients use it (through HTTPS_PROXY's CONNECT)."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mitmproxy import http, io
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from provider_cache.core import wsmatch, wsrecords
from provider_cache.core.records import unpack_valid
from provider_cache.storage.store import Store
from tests.support import fake_ws
from tests.support.fake_ws import FakeWebSocketProvider
from tests.support.proxy import Mitmdump, free_port
from tests.support.secrets import GOOGLE_KEY, OPENAI_KEY, OTHERS

HOSTS = ("api.openai.com", "generativelanguage.googleapis.com")
REALTIME = "wss://api.openai.com/v1/realtime?model=gpt-realtime"
RESPONSES = "wss://api.openai.com/v1/responses"
GEMINI = f"wss://generativelanguage.googleapis.com{fake_ws.GEMINI_PATH}?key={GOOGLE_KEY}"
OTHER_KEY = OTHERS[0]
AUDIO = base64.b64encode(bytes(range(256)) * 8).decode()


def realtime_item(text: str) -> str:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return json.dumps({"type": "conversation.item.create", "item": item})


#: Per dialect: the URL, the headers, how many messages the server opens with, then each
#: client message and how many answers it gets.
SCRIPTS: dict[str, tuple[str, dict[str, str], int, list[tuple[str | bytes, int]]]] = {
    "openai-realtime": (
        REALTIME,
        {"Authorization": f"Bearer {OPENAI_KEY}", "OpenAI-Beta": "realtime=v1"},
        1,
        [
            (json.dumps({"type": "session.update", "session": {"modalities": ["text"]}}), 1),
            (realtime_item("hello"), 1),
            (json.dumps({"type": "input_audio_buffer.append", "audio": AUDIO}), 0),
            (json.dumps({"type": "input_audio_buffer.commit"}), 1),
            (bytes(range(64)), 1),
            (json.dumps({"type": "response.create"}), 5),
        ],
    ),
    "openai-responses": (
        RESPONSES,
        {"Authorization": f"Bearer {OPENAI_KEY}"},
        0,
        [
            (json.dumps({"type": "response.create", "model": "gpt-4o", "input": "one"}), 5),
            (json.dumps({"type": "response.create", "model": "gpt-4o", "input": "two"}), 5),
        ],
    ),
    "gemini-live": (
        GEMINI,
        {},
        0,
        [
            (json.dumps({"setup": {"model": "models/gemini-live"}}), 1),
            (json.dumps({"clientContent": {"turns": [{"parts": [{"text": "hi"}]}]}}), 2),
            (
                json.dumps(
                    {"realtimeInput": {"mediaChunks": [{"mimeType": "audio/pcm", "data": AUDIO}]}}
                ),
                1,
            ),
        ],
    ),
}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeWebSocketProvider]:
    with FakeWebSocketProvider(tmp_path / "fake-ws") as provider:
        yield provider
    assert not provider.errors, provider.errors


@pytest.fixture
def proxy(tmp_path: Path, fake: FakeWebSocketProvider) -> Iterator[Callable[..., Mitmdump]]:
    started: list[Mitmdump] = []

    def start(
        mode: str = "record", *, offline: bool = False, cache: str = "cache", **options: str
    ) -> Mitmdump:
        """`cache`: the cache directory's name under the test's tmp dir (one per machine)."""
        port = free_port() if offline else fake.port
        mitmdump = Mitmdump(
            workdir=tmp_path,
            cache_dir=tmp_path / cache,
            options={"cache_mode": mode, **options},
            resolve=dict.fromkeys(HOSTS, port),
            upstream_ca=fake.ca_path,
        )
        started.append(mitmdump)
        return mitmdump.start()

    yield start
    for mitmdump in started:
        mitmdump.stop()


def open_session(
    mitmdump: Mitmdump, url: str, headers: dict[str, str] | None = None, **kwargs
) -> ClientConnection:
    context = ssl.create_default_context(cafile=str(mitmdump.ca_cert))
    return connect(
        url,
        proxy=mitmdump.url,
        ssl=context,
        additional_headers=headers or {},
        open_timeout=10,
        close_timeout=5,
        **kwargs,
    )


def converse(mitmdump: Mitmdump, dialect: str) -> list[str | bytes]:
    url, headers, opening, script = SCRIPTS[dialect]
    with open_session(mitmdump, url, headers) as ws:
        got = [ws.recv(timeout=5) for _ in range(opening)]
        for message, answers in script:
            ws.send(message)
            got += [ws.recv(timeout=5) for _ in range(answers)]
    return got


def stats(mitmdump: Mitmdump) -> dict:
    return json.loads((mitmdump.cache_dir / "stats.json").read_text())


def sessions(cache_dir: Path) -> list:
    with Store(cache_dir, readonly=True) as store:
        entries = list(unpack_valid(store.scan(stop=lambda: False)))
    return [e for e in entries if wsrecords.is_session(e)]


@pytest.mark.parametrize("dialect", sorted(SCRIPTS))
def test_a_session_recorded_once_replays_offline_message_for_message(proxy, fake, dialect):
    recording = proxy("record")
    recorded = converse(recording, dialect)
    recording.stop()
    assert fake.connections == 1
    assert any("sess_1" in (m if isinstance(m, str) else m.decode()) for m in recorded)
    (entry,) = sessions(recording.cache_dir)
    assert entry.response.status == 101
    replaying = proxy("replay", offline=True)
    assert converse(replaying, dialect) == recorded
    assert converse(replaying, dialect) == recorded  # and again: a session is reusable
    replaying.stop()
    assert fake.connections == 1  # replay never reached the provider
    if dialect == "gemini-live":  # the server's JSON came in binary frames, and goes out so
        assert all(isinstance(m, bytes) for m in recorded)


def test_a_key_in_the_handshake_url_is_in_no_entry_or_log_line(proxy, fake):
    """The conftest scans every file (store, stats, mitmdump's log) for the planted keys;
    here every message line of the console names the handshake URL with its key redacted."""
    recording = proxy("record")
    converse(recording, "gemini-live")
    recording.stop()
    assert GOOGLE_KEY in fake.handshakes[0][0]  # the provider got it
    (gemini,) = sessions(recording.cache_dir)
    assert "key=%3Credacted%3E" in gemini.request.url
    lines = [line for line in recording.log().splitlines() if "WebSocket text message" in line]
    assert lines and all("?key=%3Credacted%3E" in line for line in lines)


def test_a_key_sent_as_a_subprotocol_is_in_no_entry_and_counts_by_presence(proxy, fake):
    """OpenAI's browser authentication: the key as a subprotocol. Replayed with another key,
    the session still hits. (The stats file: test_each_session_counts_once.)"""
    protocols = ["realtime", f"openai-insecure-api-key.{OPENAI_KEY}"]
    recording = proxy("record")
    with open_session(recording, REALTIME, subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        opened = ws.recv(timeout=5)
    recording.stop()
    assert OPENAI_KEY in fake.handshakes[0][1]["sec-websocket-protocol"]  # the provider got it
    (realtime,) = sessions(recording.cache_dir)
    headers = {name.lower(): value for name, value in realtime.request.headers}
    assert headers[b"sec-websocket-protocol"] == b"realtime, openai-insecure-api-key.<redacted>"

    replaying = proxy("replay", offline=True)
    other = ["realtime", f"openai-insecure-api-key.{OTHER_KEY}"]
    with open_session(replaying, REALTIME, subprotocols=other) as ws:
        assert ws.subprotocol == "realtime"
        assert ws.recv(timeout=5) == opened
    replaying.stop()


def test_a_client_message_that_differs_is_a_miss_closed_with_its_index(proxy, fake):
    recording = proxy("record")
    converse(recording, "openai-responses")
    recording.stop()
    replaying = proxy("replay", offline=True)
    url, headers, _, script = SCRIPTS["openai-responses"]
    with open_session(replaying, url, headers) as ws:
        ws.send(script[0][0])
        for _ in range(script[0][1]):
            ws.recv(timeout=5)
        ws.send(json.dumps({"type": "response.create", "model": "gpt-4o", "input": "TWO"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    replaying.stop()
    assert closed.value.rcvd.code == wsmatch.DIVERGED_CODE
    assert "client message 1" in closed.value.rcvd.reason
    counts = stats(replaying)
    assert (counts["hits"], counts["misses"]) == (0, 1)
    (missed,) = counts["missed"]
    assert missed["closest"]["differences"] == ['client message 1: $.input: "two" → "TWO"']
    assert fake.connections == 1


def test_a_server_message_waits_for_the_client_message_it_followed(proxy, fake):
    recording = proxy("record")
    converse(recording, "openai-realtime")
    recording.stop()
    url, headers, _, script = SCRIPTS["openai-realtime"]
    replaying = proxy("replay", offline=True)
    with open_session(replaying, url, headers) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # session.updated is recorded next, after session.update
        ws.send(script[0][0])
        assert json.loads(ws.recv(timeout=5))["type"] == "session.updated"
    replaying.stop()


def test_a_handshake_never_recorded_is_a_clear_miss_in_replay_mode(proxy, fake):
    replaying = proxy("replay", offline=True)
    with pytest.raises(Exception, match="404"):
        open_session(replaying, RESPONSES)
    replaying.stop()
    assert fake.connections == 0
    assert stats(replaying)["misses"] == 1


@pytest.mark.parametrize("fault", ["cut", "close-error"])
def test_a_session_the_upstream_broke_is_not_stored(proxy, fake, fault):
    message = json.dumps({"type": "response.create", "model": "gpt-4o", "input": fault})
    recording = proxy("record")
    with open_session(recording, RESPONSES) as ws:
        ws.send(message)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    recording.stop()
    assert sessions(recording.cache_dir) == []
    rejected = stats(recording)["rejected"]
    assert rejected["cut_short" if fault == "cut" else "stream_error"] == 1


def test_a_websocket_of_no_provider_is_tunnelled_untouched(proxy, fake):
    """localhost is no provider host: its TLS is not intercepted (the client trusts only the
    fake's own CA here), and nothing is recorded."""
    recording = proxy("record")
    context = ssl.create_default_context(cafile=str(fake.ca_path))
    url = f"wss://localhost:{fake.port}{fake_ws.ECHO_PATH}"
    with connect(url, proxy=recording.url, ssl=context, open_timeout=10) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
    recording.stop()
    assert sessions(recording.cache_dir) == []
    counts = stats(recording)
    assert (counts["hits"], counts["misses"], counts["recorded"]) == (0, 0, 0)


def test_each_session_counts_once(proxy, fake):
    recording = proxy("record")
    url, headers, _, script = SCRIPTS["openai-responses"]
    protocols = ["realtime", f"openai-insecure-api-key.{OPENAI_KEY}"]
    with open_session(recording, url, headers, subprotocols=protocols) as ws:
        ws.send(script[0][0])
        for _ in range(script[0][1]):
            ws.recv(timeout=5)
    recording.stop()
    text = (recording.cache_dir / "stats.json").read_text()
    counts = json.loads(text)
    assert (counts["misses"], counts["recorded"], counts["passthrough"]) == (1, 1, 0)
    assert counts["rejected"]["error_status"] == 0
    assert OPENAI_KEY not in text
    replaying = proxy("replay", offline=True)
    with open_session(replaying, url, headers, subprotocols=protocols) as ws:
        ws.send(script[0][0])
        for _ in range(script[0][1]):
            ws.recv(timeout=5)
    replaying.stop()
    counts = stats(replaying)
    assert (counts["hits"], counts["misses"], counts["passthrough"]) == (1, 0, 0)


def test_ls_and_show_list_a_session_with_its_messages_and_directions(proxy, fake):
    recording = proxy("record")
    recorded = converse(recording, "openai-realtime")
    recording.stop()
    (entry,) = sessions(recording.cache_dir)
    messages = len(recorded) + len(SCRIPTS["openai-realtime"][3])  # theirs and ours

    (line, _total) = recordings(recording.cache_dir, "ls").splitlines()
    assert f" websocket:{messages} " in line and " sse:" not in line
    shown = recordings(recording.cache_dir, "show", entry.key[:12])
    assert "=== WebSocket conversation 1" in shown
    assert shown.count("--- → ") == len(SCRIPTS["openai-realtime"][3])  # text and audio
    assert shown.count("--- ← text") == len(recorded)


def recordings(cache_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "provider_cache",
            "recordings",
            "--cache-dir",
            str(cache_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_session_recorded_on_one_machine_replays_on_another_from_the_remote(proxy, fake, s3):
    """Machine A records with the remote tier and uploads; machine B, with an empty store
    and no provider, replays the session from the bucket, and then from its own store."""
    a = proxy("record", cache="a", cache_remote=s3.url)
    recorded = converse(a, "openai-realtime")
    assert a.stop() == 0
    assert stats(a)["remote"]["uploaded"] == 1
    b = proxy("replay", offline=True, cache="b", cache_remote=s3.url)
    assert converse(b, "openai-realtime") == recorded
    assert b.stop() == 0
    counts = stats(b)
    assert (counts["hits"], counts["misses"], counts["tiers"]) == (1, 0, {"local": 0, "remote": 1})
    assert counts["remote"]["uploaded"] == 0  # what B got from the remote is not sent back
    assert len(sessions(b.cache_dir)) == 1
    again = proxy("replay", offline=True, cache="b")  # no remote: B's own store serves it
    assert converse(again, "openai-realtime") == recorded
    again.stop()
    assert fake.connections == 1


def test_an_exported_session_is_a_websocket_flow_and_imports_into_another_store(
    proxy, fake, tmp_path
):
    """`export --format mitm` writes the session as mitmweb shows one (the messages, in
    order, with their directions); `import` of that file into an empty store replays it."""
    recording = proxy("record")
    recorded = converse(recording, "gemini-live")
    recording.stop()
    flow_file = tmp_path / "sessions.mitm"
    assert "exported 1 entries" in recordings(
        recording.cache_dir, "export", "--format", "mitm", "-o", str(flow_file)
    )
    with flow_file.open("rb") as fo:
        (flow,) = list(io.FlowReader(fo).stream())
    assert isinstance(flow, http.HTTPFlow) and flow.websocket is not None
    messages = flow.websocket.messages
    assert [m.content for m in messages if not m.from_client] == recorded
    sent = [m for m, _ in SCRIPTS["gemini-live"][3]]
    assert [m.content.decode() for m in messages if m.from_client] == sent
    assert GOOGLE_KEY not in flow_file.read_bytes().decode("latin-1")
    other = tmp_path / "other"
    recordings(other, "import", str(flow_file))
    replaying = proxy("replay", offline=True, cache="other")
    assert converse(replaying, "gemini-live") == recorded
    replaying.stop()
    assert stats(replaying)["hits"] == 1 and fake.connections == 1
