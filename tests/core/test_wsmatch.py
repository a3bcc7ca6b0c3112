"""Replaying a conversation: what each client message releases, and where one diverges."""

from __future__ import annotations

import json

from provider_cache.core import keys, userrules, wsmatch
from provider_cache.core.wsrecords import Message, Session, Take

RULES = keys.KeyRules()


def server(offset: float, event: dict | bytes) -> Message:
    if isinstance(event, bytes):
        return Message(False, False, offset, event)
    return Message(False, True, offset, json.dumps(event).encode())


def client(offset: float, event: dict | bytes) -> Message:
    if isinstance(event, bytes):
        return Message(True, False, offset, event)
    return Message(True, True, offset, json.dumps(event).encode())


CREATED = server(0.0, {"type": "session.created"})
ASK = client(0.5, {"type": "response.create", "response": {"modalities": ["text"]}})
DELTA = server(0.6, {"type": "response.output_text.delta", "delta": "hi"})
DONE = server(0.9, {"type": "response.done"})
AUDIO = client(1.0, b"\x00\x01pcm")
HEARD = server(1.2, {"type": "audio.received"})
TAKE = Take((CREATED, ASK, DELTA, DONE, AUDIO, HEARD), 1000, "", True)


def conversation(*takes: Take, rules: keys.KeyRules = RULES, secrets=()) -> wsmatch.Conversation:
    return wsmatch.Conversation(Session(takes), wsmatch.Canon(rules, list(secrets)))


def test_the_opening_messages_come_before_any_client_message_and_nothing_else() -> None:
    step = conversation(TAKE).opening()
    assert step.release == [CREATED]
    assert step.diverged is None and step.close is None


def test_each_client_message_releases_the_server_messages_that_followed_it() -> None:
    talk = conversation(TAKE)
    talk.opening()
    step = talk.client(True, b'{"response": {"modalities": ["text"]}, "type": "response.create"}')
    assert step.release == [DELTA, DONE]
    assert step.anchor == ASK.offset
    assert talk.client(False, b"\x00\x01pcm").release == [HEARD]


def test_json_is_compared_canonically_not_byte_for_byte() -> None:
    talk = conversation(TAKE)
    spaced = b'{ "type" : "response.create",\n "response": {"modalities": ["text"]} }'
    assert talk.client(True, spaced).diverged is None


def test_a_different_message_diverges_at_its_index_with_what_differs() -> None:
    talk = conversation(TAKE)
    step = talk.client(True, b'{"type": "response.create", "response": {"modalities": ["audio"]}}')
    assert step.diverged is not None and step.release == []
    assert step.diverged.index == 0
    assert step.diverged.differences == [
        'client message 0: $.response.modalities[0]: "text" → "audio"'
    ]
    assert "client message 0" in step.diverged.reason()


def test_audio_is_compared_by_its_bytes() -> None:
    talk = conversation(TAKE)
    talk.client(True, ASK.content)
    step = talk.client(False, b"\x00\x02pcm")
    assert step.diverged is not None and step.diverged.index == 1
    assert step.diverged.differences == ["client message 1: (binary, 5 → 5 bytes)"]


def test_text_sent_where_binary_was_recorded_diverges() -> None:
    talk = conversation(TAKE)
    talk.client(True, ASK.content)
    step = talk.client(True, b"pcm")
    assert step.diverged is not None
    assert step.diverged.differences == ["client message 1: binary → text"]


def test_a_message_past_the_end_of_the_recording_diverges() -> None:
    talk = conversation(TAKE)
    talk.client(True, ASK.content)
    talk.client(False, AUDIO.content)
    step = talk.client(True, ASK.content)
    assert step.diverged is not None and step.diverged.index == 2
    assert step.diverged.differences == ["client message 2: the recording has 2 only"]


def test_volatile_fields_follow_the_users_json_rules() -> None:
    recorded = Take(
        (client(0.1, {"type": "response.create", "event_id": "evt_1"}),), 1000, "", True
    )
    plain = conversation(recorded)
    assert plain.client(True, b'{"type": "response.create", "event_id": "evt_2"}').diverged
    rules = keys.KeyRules(user=userrules.parse(["$.event_id"], []))
    ruled = conversation(recorded, rules=rules)
    assert ruled.client(True, b'{"type": "response.create", "event_id": "evt_2"}').diverged is None


def test_secrets_echoed_in_a_message_match_the_redacted_recording() -> None:
    recorded = Take((client(0.1, {"note": "key <redacted>"}),), 1000, "", True)
    talk = conversation(recorded, secrets=[b"sk-live-key-123456"])
    assert talk.client(True, b'{"note": "key sk-live-key-123456"}').diverged is None


def test_a_second_take_answers_a_conversation_the_first_does_not_have() -> None:
    other = Take(
        (CREATED, client(0.4, {"type": "other"}), server(0.5, {"type": "b"})), 1000, "", True
    )
    talk = conversation(TAKE, other)
    assert talk.opening().release == [CREATED]  # both takes open alike
    step = talk.client(True, b'{"type": "other"}')
    assert step.diverged is None
    assert step.release == [other.messages[2]]


def test_takes_that_released_other_answers_leave_the_conversation() -> None:
    """Once take A's answer went out, take B (same question, another answer) cannot go on."""
    first = Take((ASK, server(0.1, {"delta": "A"}), client(0.2, {"n": 2})), 1000, "", True)
    second = Take(
        (ASK, server(0.1, {"delta": "B"}), client(0.2, {"n": 3}), server(0.3, {"x": 1})),
        1000,
        "",
        True,
    )
    talk = conversation(first, second)
    assert talk.client(True, ASK.content).release == [first.messages[1]]
    assert talk.client(True, b'{"n": 3}').diverged is not None


def test_a_take_the_server_closed_closes_after_its_last_messages() -> None:
    take = Take((ASK, DONE), 1011, "going", False)
    step = conversation(take).client(True, ASK.content)
    assert step.release == [DONE]
    assert step.close == (1011, "going")


def test_a_take_the_client_closed_is_not_closed_by_the_replay() -> None:
    assert conversation(Take((ASK, DONE), 1000, "", True)).client(True, ASK.content).close is None


def test_the_close_reason_fits_a_close_frame() -> None:
    reason = wsmatch.Divergence(10**100, []).reason()
    assert len(reason.encode()) <= wsmatch.MAX_REASON
