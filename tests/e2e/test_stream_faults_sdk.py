"""Faulty streams through a real proxy with real SDKs (SPEC §4, §5; issue 15): each fault of
the fake provider answered to the client as it came, not stored, and counted by its reason;
the early close after a stream's last event a complete recording; no secret on disk.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from provider_cache.core.keys import KEY_VERSION
from provider_cache.core.rejections import REASONS
from tests.e2e.test_stream_formats import (
    BEDROCK_MODEL,
    CALLS,
    PROMPT,
    PROXIED,
    Target,
    azure_chat_stream,
    chat_stream,
    converse_stream,
    gemini_generate,
    gemini_raw,
    outcome,
    stats_file,
    stored,
)
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import Mitmdump
from tests.support.s3server import Bucket

#: How long a proxy may take to finish a flow the client already gave up on.
SETTLE_SECONDS = 10.0


def wait_for_log(proxy: Mitmdump, text: str) -> None:
    """Until the proxy logs `text`: a flow the client gave up on ends a moment later."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while text not in proxy.log() and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_recorded(proxy: Mitmdump, count: int) -> None:
    """Until the live stats (SPEC §6) count `count` recordings: the SDK that hung up after
    its stream's last event has the answer before the proxy has stored it."""
    deadline = time.monotonic() + SETTLE_SECONDS
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as client:
        while time.monotonic() < deadline:
            live = client.get("http://provider-cache.internal/stats").json()
            if live["recorded"] >= count:
                return
            time.sleep(0.05)


# --- faults: passed on as they came, never stored, counted by reason --------------------------

FAULTS: list[tuple[str, str, str]] = [
    ("bedrock-converse-stream", "cut-frame", "cut_short"),
    ("bedrock-converse-stream", "cut-stream", "cut_short"),
    ("bedrock-converse-stream", "bad-crc", "undecodable"),
    ("bedrock-converse-stream", "exception-frame", "stream_error"),
    ("bedrock-converse-stream", "no-terminal", "incomplete"),
    ("bedrock-invoke-stream", "exception-frame", "stream_error"),
    ("bedrock-invoke-stream", "no-terminal", "incomplete"),
    ("openai-responses-stream", "event-error", "stream_error"),
    ("openai-responses-stream", "response-failed", "stream_error"),
    ("openai-responses-stream", "no-terminal", "incomplete"),
    ("gemini-stream-sse", "no-terminal", "incomplete"),
    ("gemini-stream-array", "no-terminal", "incomplete"),
    ("gemini-stream-array", "cut-frame", "cut_short"),
    ("ollama-ndjson", "no-terminal", "incomplete"),
    ("ollama-ndjson", "cut-frame", "cut_short"),
]


@pytest.mark.parametrize(
    ("name", "fault", "reason"), FAULTS, ids=[f"{n}-{f}" for n, f, _ in FAULTS]
)
def test_a_faulty_stream_reaches_the_client_as_it_came_and_is_counted_not_stored(
    name: str, fault: str, reason: str, start_proxy, use_proxy, fake, cache_dir: Path
) -> None:
    call = CALLS[name]
    direct = outcome(call, fault, Target(fake.base_url, str(fake.ca_path)))
    proxy = start_proxy("record")
    use_proxy(proxy)

    assert outcome(call, fault) == direct
    wait_for_log(proxy, "not recorded")
    stats = stats_file(proxy, cache_dir)
    assert stored(cache_dir) == []
    assert stats["recorded"] == 0
    assert f"not recorded ({reason}:" in proxy.log()
    # The counts of SPEC §5 (issue 15 item 3): in total, every reason; per host, this one.
    assert stats["rejected"] == {r: int(r == reason) for r in REASONS}
    by_host = stats["by_host"][call.host]["rejected"]
    assert {r: by_host.get(r, 0) for r in REASONS} == stats["rejected"]


def test_the_early_close_after_done_is_a_complete_recording(
    start_proxy, use_proxy, fake: FakeProvider, cache_dir: Path
) -> None:
    """`linger`: the fake keeps the stream open 3 s after `[DONE]`; the SDK hangs up."""
    proxy = start_proxy("record")
    use_proxy(proxy)
    recorded = chat_stream(PROXIED, "linger")
    wait_for_recorded(proxy, 1)
    stats = stats_file(proxy, cache_dir)

    (entry,) = stored(cache_dir)
    assert entry.response.chunks is not None
    assert b"".join(entry.response.chunks).endswith(b"data: [DONE]\n\n")
    assert stats["recorded"] == 1
    assert stats["rejected"] == dict.fromkeys(REASONS, 0)
    use_proxy(start_proxy("replay", offline=True))
    assert chat_stream(PROXIED, "linger") == recorded


def test_a_recording_stored_as_the_proxy_stops_is_counted_and_uploaded(
    start_proxy, use_proxy, fake: FakeProvider, cache_dir: Path, s3: Bucket, monkeypatch
) -> None:
    """A complete stream (`[DONE]` came; the fake lingers before its end) is still open as
    the run ends (cache_run.py stops the proxy as its command exits; an SDK that hung up
    after `[DONE]` a moment earlier races the same way): the proxy stores it on the way
    out, so the final stats file must count it and the remote tier must get it."""
    proxy = start_proxy("record", cache_remote=s3.url)
    use_proxy(proxy)
    for name in ("NO_PROXY", "no_proxy"):  # the S3 server: straight, as the proxy goes
        monkeypatch.setenv(name, "127.0.0.1")
    body = {"model": "linger", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    url = "https://api.openai.com/v1/chat/completions"
    with httpx.Client(timeout=30) as client, client.stream("POST", url, json=body) as answer:
        received = b""
        for piece in answer.iter_raw():
            received += piece
            if received.endswith(b"data: [DONE]\n\n"):
                break
        stats = stats_file(proxy, cache_dir)
    assert len(stored(cache_dir)) == 1
    prefix = s3.url.removeprefix(f"s3://{s3.name}/") + f"/v{KEY_VERSION}/"
    listed = s3.server.client().list_objects_v2(Bucket=s3.name, Prefix=prefix)
    assert (stats["recorded"], stats["remote"]["uploaded"], listed["KeyCount"]) == (1, 1, 1)


# --- secrets -----------------------------------------------------------------------------------


def test_sigv4_and_google_keys_never_reach_the_disk(
    start_proxy, use_proxy, fake: FakeProvider, tmp_path: Path, cache_dir: Path
) -> None:
    """SigV4's authorization (its signature is a secret of its own), x-goog-api-key, `?key=`
    and Azure's api-key: sent upstream, recorded, and in no file of the run."""
    proxy = start_proxy("record")
    use_proxy(proxy)
    converse_stream(PROXIED, BEDROCK_MODEL)
    gemini_generate(PROXIED, "gemini-2.0-flash")
    gemini_raw(PROXIED, "gemini-2.0-flash", f"?key={secrets.QUERY_KEY}")
    azure_chat_stream(PROXIED, "gpt-4o-mini")
    wait_for_recorded(proxy, 4)
    stats = stats_file(proxy, cache_dir)

    sent = [dict((k.lower(), v) for k, v in r["headers"]) for r in fake.requests]
    sigv4 = sent[0]["authorization"]
    signature = sigv4.rpartition("Signature=")[2]
    assert sigv4.startswith("AWS4-HMAC-SHA256 ") and len(signature) == 64
    assert sent[1]["x-goog-api-key"] == secrets.GOOGLE_KEY
    assert f"key={secrets.QUERY_KEY}" in fake.requests[2]["path"]
    assert sent[3]["api-key"] == secrets.AZURE_KEY
    assert stats["recorded"] == len(stored(cache_dir)) == 4
    planted = (sigv4, signature, secrets.GOOGLE_KEY, secrets.QUERY_KEY, secrets.AZURE_KEY)
    assert secrets.files_containing_secrets(tmp_path, secrets=planted) == []
