"""Cache entries as mitmproxy flows: faithful to the store, and readable as a flow file."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest
from mitmproxy import flowfilter, http, io
from mitmproxy.addons import serverplayback
from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from provider_cache.core import wsrecords
from provider_cache.core.keys import KeyRules
from provider_cache.core.records import Entry, StoredRequest, StoredResponse, pack, unpack
from provider_cache.mitm import flowimport, flows
from provider_cache.mitm.flowfile import (
    MARKERS,
    entry_to_flow,
    entry_to_flows,
    flow_id,
    when,
    write_flows,
)
from tests.support.sessions import session_entry, take

KEY = "2dc6f02af6f20093a80b8f297ccbaa6db84e93ceb041e1f7f9dfa50e11af385a"
RECORDED_AT = 1_732_579_200.25
SSE = [b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"]


def entry(
    url: str = "https://api.openai.com/v1/chat/completions",
    request_headers: list[tuple[bytes, bytes]] | None = None,
    request_body: bytes = b'{"model":"gpt-4o-mini"}',
    body: bytes = b'{"id":"chatcmpl-1"}',
    chunks: list[bytes] | None = None,
    key: str = KEY,
) -> Entry:
    return Entry(
        key=key,
        recorded_at=RECORDED_AT,
        request=StoredRequest(
            method="POST",
            url=url,
            headers=request_headers
            or [(b"content-type", b"application/json"), (b"authorization", b"<redacted>")],
            body=request_body,
        ),
        response=StoredResponse(
            status=201,
            reason="Created",
            headers=[(b"content-type", b"application/json"), (b"x-request-id", b"req_1")],
            body=body,
            chunks=chunks,
        ),
    )


def test_request_is_the_stored_one_secrets_redacted():
    flow = entry_to_flow(entry())
    request = flow.request
    assert (request.method, request.pretty_url) == (
        "POST",
        "https://api.openai.com/v1/chat/completions",
    )
    assert (request.scheme, request.host, request.port) == ("https", "api.openai.com", 443)
    assert request.headers.fields == (
        (b"content-type", b"application/json"),
        (b"authorization", b"<redacted>"),
    )
    assert request.raw_content == b'{"model":"gpt-4o-mini"}'
    assert (request.timestamp_start, request.timestamp_end) == (RECORDED_AT, RECORDED_AT)


def test_compressed_request_body_is_kept_as_sent():
    sent = gzip.compress(b'{"model":"m"}')
    headers = [(b"content-encoding", b"gzip"), (b"content-type", b"application/json")]
    request = entry_to_flow(entry(request_headers=headers, request_body=sent)).request
    assert request.raw_content == sent
    assert request.content == b'{"model":"m"}'


def test_url_port_and_redacted_query_survive():
    url = "http://localhost:8080/v1beta/models/gemini:generateContent?alt=sse&key=%3Credacted%3E"
    request = entry_to_flow(entry(url=url)).request
    assert (request.scheme, request.host, request.port) == ("http", "localhost", 8080)
    assert request.path == "/v1beta/models/gemini:generateContent?alt=sse&key=%3Credacted%3E"
    assert request.pretty_url == url


def test_response_is_what_the_cache_replays():
    response = entry_to_flow(entry()).response
    assert (response.status_code, response.reason) == (201, "Created")
    assert response.content == b'{"id":"chatcmpl-1"}'
    assert response.headers["x-request-id"] == "req_1"
    assert response.headers["content-length"] == str(len(b'{"id":"chatcmpl-1"}'))
    assert (response.timestamp_start, response.timestamp_end) == (RECORDED_AT, RECORDED_AT)


def test_streamed_chunks_are_joined():
    response = entry_to_flow(entry(body=b"", chunks=SSE)).response
    assert response.content == b"".join(SSE)
    assert response.headers["content-length"] == str(len(b"".join(SSE)))


def test_flow_says_what_it_is():
    flow = entry_to_flow(entry())
    assert flow.metadata["provider_cache"] == {
        "result": "stored",
        "key": KEY,
        "recorded_at": RECORDED_AT,
    }
    assert flow.marked == MARKERS["stored"] == ":floppy_disk:"
    assert flow.comment == f"cache entry · recorded 2024-11-26 00:00:00 UTC · key {KEY}"
    assert flow.timestamp_created == RECORDED_AT
    assert not flow.live and flow.server_conn.address == ("api.openai.com", 443)
    assert flowfilter.parse('~comment "cache entry"')(flow)
    assert flowfilter.parse(f"~comment {KEY[:12]}")(flow)


def test_entry_meta_is_kept_in_the_metadata():
    stored = entry()
    stored.meta = {"note": "from shard 2"}
    assert entry_to_flow(stored).metadata["provider_cache"]["meta"] == {"note": "from shard 2"}


def test_flow_id_follows_the_key():
    assert entry_to_flow(entry()).id == entry_to_flow(entry()).id == flow_id(KEY)
    assert entry_to_flow(entry(key="ab" * 32)).id != flow_id(KEY)


def test_when_is_utc_to_the_second():
    assert when(0) == "1970-01-01 00:00:00 UTC"


@pytest.mark.parametrize("chunks", [None, SSE])
def test_flow_file_round_trip(tmp_path: Path, chunks: list[bytes] | None):
    entries = [unpack(pack(entry(chunks=chunks))), entry(key="cd" * 32, url="https://x.test/a")]
    path = tmp_path / "export.mitm"
    assert write_flows(entries, path) == 2
    with path.open("rb") as fo:
        read = list(io.FlowReader(fo).stream())
    expected = [entry_to_flow(e) for e in entries]
    assert [f.get_state() for f in read] == [f.get_state() for f in expected]


def test_export_is_byte_stable(tmp_path: Path):
    """The same store exports to the same bytes: a flow file can be committed and diffed."""
    first, second = tmp_path / "1.mitm", tmp_path / "2.mitm"
    write_flows([entry(), entry(key="cd" * 32)], first)
    write_flows([entry(), entry(key="cd" * 32)], second)
    assert first.read_bytes() == second.read_bytes()


def test_empty_store_writes_an_empty_flow_file(tmp_path: Path):
    path = tmp_path / "empty.mitm"
    assert write_flows([], path) == 0
    with path.open("rb") as fo:
        assert list(io.FlowReader(fo).stream()) == []


def test_exported_entry_is_served_by_mitmproxy_server_replay():
    """Faithful enough that `mitmdump --server-replay export.mitm` answers the same request."""
    playback = serverplayback.ServerPlayback()
    with taddons.context(playback) as tctx:
        tctx.configure(playback, server_replay_reuse=True)
        playback.load_flows([entry_to_flow(entry())])
        live = tflow.tflow()
        live.request = http.Request.make(
            "POST", "https://api.openai.com/v1/chat/completions", b'{"model":"gpt-4o-mini"}'
        )
        playback.request(live)
    assert live.response is not None and live.is_replay == "response"
    assert (live.response.status_code, live.response.content) == (201, b'{"id":"chatcmpl-1"}')


# -- WebSocket sessions (SPEC §13) ------------------------------------------------------


def test_a_session_is_a_flow_per_take_with_its_messages_and_directions():
    first, second = take(b'{"n": 1}'), take(b'{"n": 2}')
    flows = entry_to_flows(session_entry(first, second))
    assert [f.id for f in flows] == [flow_id(KEY), flow_id(KEY, "flow:take1")]
    for flow, recorded in zip(flows, (first, second), strict=True):
        assert flow.websocket is not None and flow.response.status_code == 101
        assert "content-length" not in flow.response.headers and flow.response.content == b""
        got = [
            (m.from_client, m.is_text, m.content, m.timestamp - RECORDED_AT)
            for m in flow.websocket.messages
        ]
        assert got == [
            (m.from_client, m.text, m.content, pytest.approx(m.offset)) for m in recorded.messages
        ]
        assert (flow.websocket.close_code, flow.websocket.closed_by_client) == (1000, True)
        assert flow.request.pretty_url.endswith("/v1/realtime?model=gpt-realtime")
    assert flows[1].comment == (
        f"cache entry · recorded 2024-11-26 00:00:00 UTC · websocket take 2 of 2, 4 messages"
        f" · key {KEY}"
    )
    assert flowfilter.parse("~websocket")(flows[0]) and flowfilter.parse('~comment "take 2"')(
        flows[1]
    )


def test_a_session_of_one_take_says_websocket_only():
    (flow,) = entry_to_flows(session_entry(take(b"{}")))
    assert " · websocket, 4 messages · " in flow.comment and "take" not in flow.comment


def test_an_unreadable_session_shows_as_its_entry():
    broken = session_entry(take(b"{}"))
    broken.meta[wsrecords.META_KEY] = {"schema": 99}
    (flow,) = entry_to_flows(broken)
    assert flow.websocket is None and flow.response.status_code == 101


def test_a_session_round_trips_through_a_flow_file_and_its_import(tmp_path: Path):
    """export --format mitm, then import: the same key, takes, messages and offsets."""
    original = session_entry(take(b'{"n": 1}'), take(b'{"n": 2}'))
    path = tmp_path / "sessions.mitm"
    assert write_flows([original, entry(key="cd" * 32)], path) == 2
    with path.open("rb") as fo:
        assert [f.websocket is not None for f in io.FlowReader(fo).stream()] == [True, True, False]
    imported = {e.key: e for e in flowimport.entries_from_flow_file(path)}
    assert set(imported) == {KEY, "cd" * 32}
    again = wsrecords.session_of(imported[KEY])
    assert again == wsrecords.Session(
        tuple(
            wsrecords.Take(
                tuple(
                    wsrecords.Message(m.from_client, m.text, pytest.approx(m.offset), m.content)
                    for m in t.messages
                ),
                t.close_code,
                t.close_reason,
                t.closed_by_client,
            )
            for t in wsrecords.session_of(original).takes
        )
    )
    assert imported[KEY].recorded_at == RECORDED_AT
    assert "recorded_run" not in imported[KEY].meta  # no proxy run recorded it


def test_a_mitmdump_websocket_flow_imports_as_a_session_without_its_secrets(tmp_path: Path):
    """A flow `mitmdump -w` saved (no cache metadata): keyed as the proxy keys a handshake,
    its secrets redacted; one that was cut is skipped, as the proxy would not store it."""
    secret = "sk-flowfile-import-secret-0001"
    saved = []
    for code in (1000, 1006):
        flow = tflow.twebsocketflow()
        flow.request.headers["authorization"] = f"Bearer {secret}"
        flow.request.path = f"/v1/realtime?api_key={secret}"
        flow.websocket.messages.append(
            WebSocketMessage(Opcode.TEXT, False, f"echo {secret}".encode(), time.time())
        )
        flow.websocket.close_code = code
        saved.append(flow)
    path = tmp_path / "mitmdump.mitm"
    with path.open("wb") as fo:
        writer = io.FlowWriter(fo)
        for flow in saved:
            writer.add(flow)
    (imported,) = flowimport.entries_from_flow_file(path)
    parts = flows.request_parts(saved[0].request)
    assert imported.key == wsrecords.session_key(parts, KeyRules())[0]
    assert len(wsrecords.session_of(imported).takes[0].messages) == len(saved[0].websocket.messages)
    assert secret.encode() not in pack(imported)
