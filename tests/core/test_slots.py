"""Sequence slots (core/slots.py): where slot n is stored, what an entry's place is, and the
count of each (test, key) sequence during a run."""

from __future__ import annotations

import re

import pytest

from provider_cache.core import slots
from provider_cache.core.records import Entry, StoredRequest, StoredResponse

KEY = "ab" * 32


def entry(key: str = KEY, body: bytes = b"1", meta: dict | None = None, status: int = 200):
    return Entry(
        key=key,
        recorded_at=1.0,
        request=StoredRequest("POST", "https://api.openai.com/v1/x", [], b"{}"),
        response=StoredResponse(status, "OK", [(b"date", body)], body),
        meta=meta if meta is not None else {"recorded_run": 1},
    )


def test_slot_one_is_the_key_itself_and_later_slots_are_keys_like_any() -> None:
    assert slots.slot_key(KEY, 1) == KEY
    later = [slots.slot_key(KEY, n) for n in range(2, 50)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in later)  # the remote tier takes them
    assert len(set(later)) == len(later) and KEY not in later
    assert slots.slot_key(KEY, 2) == slots.slot_key(KEY, 2)  # the same on every machine
    assert slots.slot_key("cd" * 32, 2) != slots.slot_key(KEY, 2)


def test_position_believes_the_meta_only_when_the_key_is_that_slots() -> None:
    placed = slots.as_slot(entry(), KEY, 3)
    assert placed.key == slots.slot_key(KEY, 3)
    assert placed.meta == {"recorded_run": 1, "slot": 3, "slot_of": KEY}
    assert slots.position(placed) == (KEY, 3)
    assert slots.position(entry()) == (KEY, 1)
    forged = entry(key="ef" * 32, meta={"slot": 3, "slot_of": KEY})
    assert slots.position(forged) == ("ef" * 32, 1)
    for meta in ({"slot": True, "slot_of": KEY}, {"slot": 1, "slot_of": KEY}, {"slot": "2"}):
        assert slots.position(entry(meta=meta)) == (KEY, 1)


def test_as_slot_one_drops_the_marks() -> None:
    back = slots.as_slot(slots.as_slot(entry(), KEY, 2), KEY, 1)
    assert back.key == KEY and back.meta == {"recorded_run": 1}


def test_sequences_group_entries_by_their_request() -> None:
    other = entry(key="cd" * 32)
    found = slots.sequences([slots.as_slot(entry(), KEY, 2), entry(), other])
    assert sorted(found[KEY]) == [1, 2] and list(found["cd" * 32]) == [1]


def test_same_answer_is_status_and_body_not_headers() -> None:
    assert slots.same_answer(entry(body=b"a"), entry(body=b"a", meta={}))
    a, b = entry(body=b"a"), entry(body=b"a")
    b.response.headers = [(b"date", b"other")]
    assert slots.same_answer(a, b)
    assert not slots.same_answer(entry(body=b"a"), entry(body=b"b"))
    assert not slots.same_answer(entry(body=b"a"), entry(body=b"a", status=201))


def test_each_test_and_key_counts_its_own_requests() -> None:
    seq = slots.Sequences()
    assert [seq.advance("t1", KEY).n for _ in range(3)] == [1, 2, 3]
    assert seq.advance("t2", KEY).n == 1
    assert seq.advance("t1", "cd" * 32).n == 1
    assert seq.advance(None, KEY).n == 1
    fourth = seq.advance("t1", KEY)
    assert (fourth.of, fourth.n, fourth.key) == (KEY, 4, slots.slot_key(KEY, 4))


def test_previous_is_the_slot_served_to_the_request_before() -> None:
    seq = slots.Sequences()
    first = seq.advance(None, KEY)
    assert first.previous is None
    first.served(1)
    second = seq.advance(None, KEY)
    assert second.previous == 1  # not served (a miss): the next has no previous
    assert seq.advance(None, KEY).previous is None


def test_sequences_are_bounded() -> None:
    seq = slots.Sequences(capacity=2)
    for key in ("a", "b", "c"):
        seq.advance(None, key)
    assert len(seq.lru) == 2
    assert seq.advance(None, "a").n == 1  # forgotten: it starts again


def test_past_end_values() -> None:
    assert slots.parse_past_end("last") == "last" and slots.parse_past_end("miss") == "miss"
    with pytest.raises(ValueError, match="cache_sequence_past_end must be one of last, miss"):
        slots.parse_past_end("again")
