"""Compression bombs (SPEC §9): cache_max_body_size limits what an answer *decodes* to, and
the decoder stops there instead of inflating a few hundred KB into hundreds of MB."""

from __future__ import annotations

from pathlib import Path

import httpx

BOMB = 96 << 20  # decoded bytes; gzipped, about 100 KB


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) << 10


def test_a_gzip_bomb_answer_is_not_recorded_and_not_inflated(start_proxy, use_proxy, fake):
    proxy = start_proxy("record", cache_max_body_size="1m")
    use_proxy(proxy)
    url = f"https://api.openai.com/v1/models?encoding=gzip&pad={BOMB}"
    with httpx.Client(timeout=60) as http:
        http.get("https://api.openai.com/v1/models")  # warm up: the proxy's own peak first
        before = peak_rss(proxy.managed.proc.pid)
        answers = [http.get(url) for _ in range(2)]
        stats = http.get("http://provider-cache.internal/stats").json()
    grown = peak_rss(proxy.managed.proc.pid) - before
    assert [a.status_code for a in answers] == [200, 200]
    assert len(answers[0].content) == len(answers[1].content) > BOMB  # the client decodes it
    assert [a.headers["x-provider-cache"] for a in answers] == ["miss", "miss"]  # not stored
    assert stats["recorded"] == 1  # only the warm-up
    assert grown < 32 << 20, f"the proxy's peak memory grew by {grown >> 20} MiB"
    proxy.stop()
    assert proxy.log().count("decodes past cache_max_body_size: not recorded") == 2
