"""The real anthropic SDK through the proxy, configured only by environment variables."""

from __future__ import annotations

import anthropic
import pytest

from tests.support import secrets
from tests.support.fake_provider import FakeProvider

MESSAGES = [{"role": "user", "content": "name a cache"}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", secrets.ANTHROPIC_KEY)


def create(**kwargs):
    with anthropic.Anthropic(max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-test-model", max_tokens=64, messages=MESSAGES, **kwargs
        )
        return raw.headers.get("x-provider-cache"), raw.parse()


def stream_text() -> tuple[list[str], str]:
    with (
        anthropic.Anthropic(max_retries=0) as client,
        client.messages.stream(model="claude-test-model", max_tokens=64, messages=MESSAGES) as s,
    ):
        events = [e.type for e in s]
        text = s.get_final_text()
        state = s.response.headers.get("x-provider-cache")
    return [text, *events], state


def test_messages_record_then_hit(start_proxy, use_proxy, fake: FakeProvider) -> None:
    use_proxy(start_proxy("record"))
    (s1, m1), (s2, m2) = create(), create()
    assert (s1, s2) == ("miss", "hit")
    assert m1.content[0].text == "echo: name a cache"
    assert m2 == m1
    assert fake.served == 1


def test_stream_replays_offline_with_the_same_events(start_proxy, use_proxy, fake) -> None:
    use_proxy(start_proxy("record"))
    recorded, recorded_state = stream_text()
    use_proxy(start_proxy("replay", offline=True))
    replayed, replayed_state = stream_text()

    assert recorded_state == "miss" and replayed_state == "hit"
    assert recorded[0] == "echo: name a cache"
    assert replayed == recorded
    assert "message_stop" in recorded
    assert fake.served == 1


def test_errors_are_not_recorded(start_proxy, use_proxy, fake: FakeProvider) -> None:
    use_proxy(start_proxy("record"))
    with anthropic.Anthropic(max_retries=0) as client:
        for _ in range(2):
            with pytest.raises(anthropic.InternalServerError):
                client.messages.create(model="fail-500", max_tokens=8, messages=MESSAGES)
            with pytest.raises(anthropic.RateLimitError):
                client.messages.create(model="rate-429", max_tokens=8, messages=MESSAGES)
    assert fake.served == 4


def test_replay_miss_raises_not_found_without_retries(start_proxy, use_proxy, fake) -> None:
    use_proxy(start_proxy("replay", offline=True))
    with anthropic.Anthropic() as client, pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="x", max_tokens=8, messages=MESSAGES)
    assert info.value.status_code == 404
    assert info.value.body["error"]["type"] == "provider_cache_miss"
    assert fake.served == 0
