"""Sequence slots (SPEC §3, cache_sequence) on a real mitmdump, with the openai SDK.

The fake provider numbers its answers (chatcmpl-1, -2, …): a request sent three times under
cache_sequence records three answers and replays them in order, offline; past the last
one the last is served again, or it is a miss when cache_sequence_past_end=miss. Without
cache_sequence, the old behaviour: one answer per key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support import secrets
from tests.support.fake_provider import FakeProvider

SEQUENCE = {"cache_sequence": "true"}
RECORDINGS = (sys.executable, "-m", "provider_cache", "recordings")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)


@pytest.fixture
def new_client() -> Iterator:
    clients: list[openai.OpenAI] = []

    def make() -> openai.OpenAI:
        clients.append(openai.OpenAI(max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def ask(client: openai.OpenAI, prompt: str = "Poll the job. Done yet?") -> tuple[str | None, str]:
    """(x-provider-cache, the answer's id) of one chat completion."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    return raw.headers.get("x-provider-cache"), raw.parse().id


def test_three_identical_requests_record_three_answers_and_replay_them_in_order(
    start_proxy, use_proxy, new_client, fake: FakeProvider, cache_dir: Path
) -> None:
    use_proxy(start_proxy("record", **SEQUENCE))
    client = new_client()
    assert [ask(client) for _ in range(3)] == [
        ("miss", "chatcmpl-1"),
        ("miss", "chatcmpl-2"),
        ("miss", "chatcmpl-3"),
    ]
    assert fake.served == 3

    use_proxy(start_proxy("replay", offline=True, **SEQUENCE))
    client = new_client()
    assert [ask(client) for _ in range(4)] == [
        ("hit", "chatcmpl-1"),
        ("hit", "chatcmpl-2"),
        ("hit", "chatcmpl-3"),
        ("hit", "chatcmpl-3"),  # past the last: the last again (the default)
    ]
    assert fake.served == 3

    listed = subprocess.run(
        [*RECORDINGS, "--cache-dir", str(cache_dir), "ls", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [json.loads(line) for line in listed.splitlines()]
    assert sorted((r["slot"], r["slots"]) for r in rows) == [(1, 3), (2, 3), (3, 3)]


def test_past_the_last_answer_is_a_miss_when_the_option_says_so(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record", **SEQUENCE))
    client = new_client()
    ask(client)
    ask(client)
    use_proxy(start_proxy("replay", offline=True, cache_sequence_past_end="miss", **SEQUENCE))
    client = new_client()
    assert [ask(client) for _ in range(2)] == [("hit", "chatcmpl-1"), ("hit", "chatcmpl-2")]
    with pytest.raises(openai.NotFoundError) as miss:
        ask(client)
    assert miss.value.response.headers["x-provider-cache"] == "miss"
    assert "answer 3 of key" in miss.value.response.json()["error"]["message"]


def test_without_cache_sequence_identical_requests_share_the_first_answer(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record"))
    client = new_client()
    assert [ask(client) for _ in range(3)] == [
        ("miss", "chatcmpl-1"),
        ("hit", "chatcmpl-1"),
        ("hit", "chatcmpl-1"),
    ]
    use_proxy(start_proxy("replay", offline=True))
    assert [ask(new_client()) for _ in range(2)] == [("hit", "chatcmpl-1")] * 2
    assert fake.served == 1


def test_a_bad_past_end_value_stops_mitmdump_with_one_line(start_proxy) -> None:
    with pytest.raises(RuntimeError, match="cache_sequence_past_end must be one of last, miss"):
        start_proxy("record", cache_sequence_past_end="again", **SEQUENCE)
