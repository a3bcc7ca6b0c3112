"""Replay with the recorded pacing (SPEC §4, `cache_replay_timing`) through real mitmdump
with real SDKs: a stream recorded with gaps between its pieces replays offline with about
those gaps under `recorded`, faster under a factor, and at once under `none` (the default).

Timings on a shared machine wobble: the assertions are about order and generous bounds,
not exact figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import boto3
import openai
import pytest
from botocore.config import Config

from provider_cache.core import records
from provider_cache.storage.store import Store
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.s3server import AWS_SECRET_ACCESS_KEY

DELAY = 0.12  # between two pieces, as the fake provider sends them
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PROMPT = "what is a cache"


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # botocore: REQUESTS_CA_BUNDLE then


def openai_arrivals() -> tuple[list[float], str]:
    """Each chunk's arrival (seconds after the call), and the text they carry."""
    with openai.OpenAI(max_retries=0) as client:
        started = time.perf_counter()
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        arrivals, text = [], ""
        with stream:
            for chunk in stream:
                arrivals.append(time.perf_counter() - started)
                text += "".join(c.delta.content or "" for c in chunk.choices)
    return arrivals, text


def bedrock_arrivals() -> tuple[list[float], str]:
    """ConverseStream's events by boto3: AWS event-stream frames, not SSE."""
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="AKIAFAKETIMINGTEST01",
        aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )
    with closing(client):
        started = time.perf_counter()
        answer = client.converse_stream(
            modelId=BEDROCK_MODEL, messages=[{"role": "user", "content": [{"text": PROMPT}]}]
        )
        arrivals, text = [], ""
        with closing(answer["stream"]) as events:
            for event in events:
                arrivals.append(time.perf_counter() - started)
                text += event.get("contentBlockDelta", {}).get("delta", {}).get("text", "")
    return arrivals, text


STREAMS: dict[str, Callable[[], tuple[list[float], str]]] = {
    "openai-sse": openai_arrivals,
    "bedrock-eventstream": bedrock_arrivals,
}


def span(arrivals: list[float]) -> float:
    """From the first piece to the last: the pacing, without connection set-up."""
    return arrivals[-1] - arrivals[0]


@pytest.mark.parametrize("name", STREAMS)
def test_a_replay_follows_the_recorded_pace_scaled_or_not_at_all(
    name: str, start_proxy, use_proxy, fake: FakeProvider, cache_dir: Path
) -> None:
    call = STREAMS[name]
    fake.chunk_delay = DELAY
    recorder = start_proxy("record")
    use_proxy(recorder)
    recorded, text = call()
    assert recorder.stop() == 0
    gaps = len(recorded) - 1
    assert span(recorded) >= 0.9 * gaps * DELAY  # the fake really paced it
    with Store(cache_dir, readonly=True) as store:
        [entry] = [records.unpack(value) for _, value in store.items()]
    offsets = entry.response.offsets
    assert offsets is not None and offsets[-1] - offsets[0] >= 0.8 * gaps * DELAY

    spans: dict[str, float] = {}
    for timing in ("recorded", "0.5", "none"):
        replayer = start_proxy("replay", offline=True, cache_replay_timing=timing)
        use_proxy(replayer)
        arrivals, replayed_text = call()
        assert replayed_text == text and len(arrivals) == len(recorded)
        assert replayer.stop() == 0, replayer.log()
        spans[timing] = span(arrivals)
        if timing == "recorded":  # piece by piece: the first long before the last
            assert arrivals[0] < 0.5 * arrivals[-1], arrivals

    assert fake.served == 1  # every replay offline
    assert 0.7 * span(recorded) <= spans["recorded"] <= 2 * span(recorded) + 0.5, spans
    assert 0.25 * span(recorded) <= spans["0.5"] <= 0.8 * span(recorded), spans
    assert spans["none"] < 0.25 * span(recorded), spans
    assert spans["none"] < spans["0.5"] < spans["recorded"], spans
