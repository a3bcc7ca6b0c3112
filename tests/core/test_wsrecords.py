"""A recorded WebSocket session: its key (the handshake under §3) and its stored shape."""

from __future__ import annotations

import json

import pytest

from provider_cache.core import keys, records, wsrecords
from provider_cache.core.records import CorruptEntry, Entry, StoredRequest, StoredResponse
from provider_cache.core.wsrecords import Message, Session, Take

RULES = keys.KeyRules()
TAKE = Take(
    (
        Message(False, True, 0.01, b'{"type":"session.created"}'),
        Message(True, True, 0.2, b'{"type":"response.create"}'),
        Message(False, False, 0.25, b"\x00\x01audio"),
    ),
    1000,
    "",
    True,
)


def handshake(*headers: tuple[str, str], query: str = "model=gpt-realtime") -> keys.RequestParts:
    return keys.RequestParts(
        method="GET",
        scheme="https",
        host="api.openai.com",
        port=443,
        path="/v1/realtime",
        query=query,
        headers=(("upgrade", "websocket"), ("sec-websocket-version", "13"), *headers),
        body=b"",
    )


def entry(session: Session) -> Entry:
    chunks, offsets, meta = wsrecords.pack_session(session)
    return Entry(
        key="k" * 64,
        recorded_at=1.0,
        request=StoredRequest("GET", "https://api.openai.com/v1/realtime", [], b""),
        response=StoredResponse(101, "Switching Protocols", [], chunks=chunks, offsets=offsets),
        meta={wsrecords.META_KEY: meta},
    )


def test_the_per_connection_nonce_and_extensions_are_not_in_the_key() -> None:
    one, _ = wsrecords.session_key(
        handshake(("sec-websocket-key", "dGhlIHNhbXBsZQ=="), ("sec-websocket-extensions", "a")),
        RULES,
    )
    two, _ = wsrecords.session_key(handshake(("sec-websocket-key", "b3RoZXIgbm9uY2U=")), RULES)
    assert one == two


def test_what_is_asked_is_in_the_key() -> None:
    base, _ = wsrecords.session_key(handshake(), RULES)
    other_model, _ = wsrecords.session_key(handshake(query="model=gpt-4o-realtime"), RULES)
    other_protocol, _ = wsrecords.session_key(
        handshake(("sec-websocket-protocol", "realtime")), RULES
    )
    assert len({base, other_model, other_protocol}) == 3


def test_a_session_never_shares_a_key_with_the_same_http_request() -> None:
    http_key, _ = keys.key_for(handshake(), RULES)
    session_key, normalized = wsrecords.session_key(handshake(), RULES)
    assert http_key != session_key
    assert normalized[wsrecords.KIND_FIELD] == wsrecords.KIND


def test_secrets_count_by_presence_in_the_query_headers_and_subprotocols() -> None:
    one, normalized = wsrecords.session_key(
        handshake(
            ("authorization", "Bearer sk-one-000000000000"),
            ("sec-websocket-protocol", "realtime, openai-insecure-api-key.sk-one-0000000000"),
            query="key=AIza-one-0000000000",
        ),
        RULES,
    )
    two, _ = wsrecords.session_key(
        handshake(
            ("authorization", "Bearer sk-two-000000000000"),
            ("sec-websocket-protocol", "realtime, openai-insecure-api-key.sk-two-0000000000"),
            query="key=AIza-two-0000000000",
        ),
        RULES,
    )
    assert one == two
    assert "one" not in repr(normalized)
    assert ("sec-websocket-protocol", "realtime, openai-insecure-api-key.<redacted>") in normalized[
        "headers"
    ]


def test_subprotocol_secrets_are_found_by_the_secret_header_words() -> None:
    value = "realtime, openai-insecure-api-key.sk-abc, openai-beta.realtime-v1"
    assert wsrecords.subprotocol_secrets(value, RULES.is_secret) == ["sk-abc"]


def test_a_session_round_trips_through_the_store_format() -> None:
    session = Session((TAKE, Take(TAKE.messages[:1], 1011, "bye", False)))
    stored = records.unpack(records.pack(entry(session)))
    assert wsrecords.is_session(stored)
    assert wsrecords.session_of(stored) == session


def test_the_messages_are_the_chunks_and_the_meta_is_plain_json() -> None:
    """`show` and `export` print chunks as they print a stream's; JSON holds the rest."""
    stored = entry(Session((TAKE,)))
    assert stored.response.chunks == [m.content for m in TAKE.messages]
    assert stored.response.offsets == [m.offset for m in TAKE.messages]
    assert json.loads(json.dumps(stored.meta)) == stored.meta


def test_an_http_entry_is_no_session() -> None:
    plain = entry(Session((TAKE,)))
    plain.meta = {}
    assert not wsrecords.is_session(plain)
    with pytest.raises(CorruptEntry):
        wsrecords.session_of(plain)


def _message(raw: dict, n: int = 0) -> list:
    return raw["takes"][0]["messages"][n]


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw, resp: raw.update(schema=99),
        lambda raw, resp: raw.update(takes=[]),
        lambda raw, resp: _message(raw).__setitem__(0, "sideways"),
        lambda raw, resp: _message(raw).__setitem__(1, "morse"),
        lambda raw, resp: _message(raw).append("extra"),
        lambda raw, resp: raw["takes"][0]["messages"].append(["client", "text"]),
        lambda raw, resp: raw["takes"][0]["messages"].pop(),
        lambda raw, resp: raw["takes"][0].update(close=[1000, ""]),
        lambda raw, resp: raw["takes"][0].update(close=["1000", "", True]),
        lambda raw, resp: raw["takes"][0].update(close=[1000, "", 1]),
        lambda raw, resp: (resp.__setattr__("chunks", None), resp.__setattr__("offsets", None)),
    ],
)
def test_a_damaged_session_is_a_corrupt_entry(damage) -> None:
    stored = records.unpack(records.pack(entry(Session((TAKE,)))))
    damage(stored.meta[wsrecords.META_KEY], stored.response)
    with pytest.raises(CorruptEntry):
        wsrecords.session_of(records.unpack(records.pack(stored)))


def test_takes_are_capped_oldest_first() -> None:
    session = Session(())
    for n in range(wsrecords.MAX_TAKES + 2):
        session = session.with_take(Take((), 1000, str(n), True))
    assert len(session.takes) == wsrecords.MAX_TAKES
    assert session.takes[0].close_reason == "2"


def test_describe_lists_directions_kinds_and_sizes() -> None:
    (take,) = wsrecords.describe(Session((TAKE,)))
    assert [(m["direction"], m["kind"], m["size"]) for m in take["messages"]] == [
        ("←", "text", 26),
        ("→", "text", 26),
        ("←", "binary", 7),
    ]
