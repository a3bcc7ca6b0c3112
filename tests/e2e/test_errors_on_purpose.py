"""Errors on purpose (SPEC §4, `cache_record_errors`) through real mitmdump with real SDKs:
error answers recorded, then replayed offline, so the SDK raises (or yields) exactly what it
did while recording; without the option, or for a cut answer, nothing is stored and the
stats say why."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError

from provider_cache.core import records
from provider_cache.storage.store import Store
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import Mitmdump
from tests.support.s3server import AWS_SECRET_ACCESS_KEY

MESSAGES = [{"role": "user", "content": "what is a cache"}]


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # botocore: REQUESTS_CA_BUNDLE then


@pytest.fixture
def client() -> Iterator[Any]:
    """A new openai client per call (its environment: the proxy in use now), no retries."""
    made: list[openai.OpenAI] = []

    def make() -> openai.OpenAI:
        made.append(openai.OpenAI(max_retries=0))
        return made[-1]

    yield make
    for c in made:
        c.close()


def status_error(client: openai.OpenAI, model: str) -> tuple[str, int, Any, str]:
    """The SDK's error for a chat call: its class, status, parsed body, and cache header."""
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=model, messages=MESSAGES)
    error = info.value
    return (
        type(error).__name__,
        error.status_code,
        error.body,
        error.response.headers["x-provider-cache"],
    )


def responses_events(client: openai.OpenAI, model: str) -> list[dict]:
    """A Responses stream's events as the SDK yields them, the failure event among them."""
    with client.responses.create(model=model, input="what is a cache", stream=True) as stream:
        return [event.model_dump() for event in stream]


def bedrock_stream_error(model: str) -> tuple[str, str]:
    """boto3's error for a ConverseStream whose stream carries an exception frame."""
    bedrock = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="AKIAFAKEERRORTEST001",
        aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )
    with closing(bedrock):
        answer = bedrock.converse_stream(
            modelId=model, messages=[{"role": "user", "content": [{"text": "what is a cache"}]}]
        )
        with closing(answer["stream"]) as events, pytest.raises(EventStreamError) as info:
            list(events)
    return info.value.response["Error"]["Code"], str(info.value)


def live_stats(proxy: Mitmdump) -> dict:
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as c:
        return c.get("http://provider-cache.internal/stats").json()


def stored(cache_dir: Path) -> list[records.Entry]:
    with Store(cache_dir, readonly=True) as store:
        return [records.unpack(value) for _, value in store.items()]


def test_error_statuses_replay_offline_as_the_same_sdk_errors(
    start_proxy, use_proxy, client, fake: FakeProvider, cache_dir: Path
) -> None:
    recorder = start_proxy("record", cache_record_errors="429,5xx")
    use_proxy(recorder)
    recorded = [status_error(client(), "fail-500"), status_error(client(), "rate-429")]
    stats = live_stats(recorder)
    assert recorder.stop() == 0
    assert fake.served == 2
    assert stats["recorded"] == 2 and sum(stats["rejected"].values()) == 0
    assert sorted(e.meta["error"] for e in stored(cache_dir)) == ["error_status"] * 2

    use_proxy(start_proxy("replay", offline=True))
    replayed = [status_error(client(), "fail-500"), status_error(client(), "rate-429")]

    assert [r[:3] for r in replayed] == [r[:3] for r in recorded]
    assert [r[0] for r in replayed] == ["InternalServerError", "RateLimitError"]
    assert [r[3] for r in recorded] == ["miss", "miss"]
    assert [r[3] for r in replayed] == ["hit", "hit"]
    assert fake.served == 2  # offline: the provider was never asked again


@pytest.mark.parametrize("model", ["event-error", "response-failed"])
def test_a_failed_stream_replays_offline_with_the_same_events(
    model: str, start_proxy, use_proxy, client, fake: FakeProvider, cache_dir: Path
) -> None:
    recorder = start_proxy("record", cache_record_errors="stream_error")
    use_proxy(recorder)
    recorded = responses_events(client(), model)
    assert recorder.stop() == 0
    failure = {"event-error": "error", "response-failed": "response.failed"}[model]
    assert recorded[-1]["type"] == failure  # the SDK yielded the provider's failure
    [entry] = stored(cache_dir)
    assert entry.meta["error"] == "stream_error" and entry.response.status == 200

    use_proxy(start_proxy("replay", offline=True))
    assert responses_events(client(), model) == recorded
    assert fake.served == 1


def test_a_bedrock_exception_frame_replays_offline_as_the_same_boto3_error(
    start_proxy, use_proxy, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record", cache_record_errors="stream_error"))
    recorded = bedrock_stream_error("exception-frame")
    assert recorded[0] == "modelStreamErrorException"

    use_proxy(start_proxy("replay", offline=True))
    assert bedrock_stream_error("exception-frame") == recorded
    assert fake.served == 1


def test_without_the_option_errors_are_not_recorded_and_counted_by_reason(
    start_proxy, use_proxy, client, fake: FakeProvider
) -> None:
    proxy = start_proxy("record")
    use_proxy(proxy)
    for _ in range(2):
        status_error(client(), "fail-500")
        responses_events(client(), "event-error")
    stats = live_stats(proxy)
    assert fake.served == 4  # each attempt reached the provider: nothing was stored
    assert stats["recorded"] == 0
    assert stats["rejected"] == {
        "cut_short": 0,
        "incomplete": 0,
        "error_status": 2,
        "stream_error": 2,
        "too_large": 0,
        "undecodable": 0,
    }
    assert stats["by_host"]["api.openai.com"]["rejected"] == {"error_status": 2, "stream_error": 2}


def test_a_cut_answer_is_never_recorded_whatever_the_option(
    start_proxy, use_proxy, client, fake: FakeProvider
) -> None:
    proxy = start_proxy("record", cache_record_errors="4xx,5xx,stream_error")
    use_proxy(proxy)
    for _ in range(2):
        with pytest.raises(openai.APIConnectionError):
            stream = client().chat.completions.create(
                model="cut-stream", messages=MESSAGES, stream=True
            )
            with stream:
                list(stream)
    stats = live_stats(proxy)
    assert fake.served == 2
    assert stats["recorded"] == 0 and stats["rejected"]["cut_short"] == 2
    assert stats["rejected"]["error_status"] == 0
