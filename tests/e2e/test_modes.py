"""The four modes of SPEC §2, across proxy restarts on one cache_dir."""

from __future__ import annotations

import httpx
import pytest

from tests.support.fake_provider import FakeProvider

URL = "https://api.openai.com/v1/chat/completions"


def ask(content: str) -> tuple[str, str]:
    """(x-provider-cache, answer id) for one chat completion through the proxy in the env."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    with httpx.Client(timeout=30) as client:
        response = client.post(URL, json=body)
    response.raise_for_status()
    return response.headers["x-provider-cache"], response.json()["id"]


def test_record_serves_hits_and_stores_misses(start_proxy, use_proxy, fake) -> None:
    use_proxy(start_proxy("record"))
    assert [ask("a"), ask("a"), ask("b")] == [
        ("miss", "chatcmpl-1"),
        ("hit", "chatcmpl-1"),
        ("miss", "chatcmpl-2"),
    ]


def test_replay_serves_hits_and_never_forwards(start_proxy, use_proxy, fake) -> None:
    use_proxy(start_proxy("record"))
    ask("a")
    use_proxy(start_proxy("replay"))
    assert ask("a") == ("hit", "chatcmpl-1")
    with pytest.raises(httpx.HTTPStatusError) as info:
        ask("never recorded")
    assert info.value.response.status_code == 404
    assert info.value.response.headers["x-provider-cache"] == "miss"
    assert fake.served == 1


def test_refresh_forwards_hits_and_overwrites(start_proxy, use_proxy, fake) -> None:
    use_proxy(start_proxy("record"))
    ask("a")
    use_proxy(start_proxy("refresh"))
    assert [ask("a"), ask("a")] == [("miss", "chatcmpl-2"), ("miss", "chatcmpl-3")]
    use_proxy(start_proxy("replay"))
    assert ask("a") == ("hit", "chatcmpl-3")


def test_read_old_write_new_serves_only_entries_from_before_this_run(
    start_proxy, use_proxy, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record"))
    ask("old")
    use_proxy(start_proxy("read-old-write-new"))
    old = [ask("old"), ask("old")]
    new = [ask("new"), ask("new")]  # a retry after a bad answer is not served that answer
    assert old == [("hit", "chatcmpl-1"), ("hit", "chatcmpl-1")]
    assert new == [("miss", "chatcmpl-2"), ("miss", "chatcmpl-3")]
    use_proxy(start_proxy("replay"))
    assert ask("new") == ("hit", "chatcmpl-3")


def test_two_proxies_share_one_cache_dir(start_proxy, use_proxy, fake) -> None:
    first, second = start_proxy("record"), start_proxy("record")
    use_proxy(first)
    ask("from first")
    use_proxy(second)
    assert ask("from first") == ("hit", "chatcmpl-1")
    ask("from second")
    use_proxy(first)
    assert ask("from second") == ("hit", "chatcmpl-2")
    assert fake.served == 2
