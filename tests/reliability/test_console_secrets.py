"""Issue 12: mitmdump's own console output (its flow lines, headers and bodies) carries no
secret, at any flow_detail, in record and replay mode, on a wide console (COLUMNS=200)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.support import secrets
from tests.support.proxy import Mitmdump
from tests.support.secrets import encodings

ECHO = "https://api.openai.com/v1/echo"
#: Each secret where a provider or gateway puts it: by name, so a failure says which leaked.
PLANTED = {
    "?key=": secrets.QUERY_KEY,
    "?api_key=": secrets.GOOGLE_KEY,
    "Authorization: Bearer": secrets.OPENAI_KEY,
    "x-api-key": secrets.ANTHROPIC_KEY,
    "JSON field api_key": secrets.BODY_KEY,
    "cf-aig-authorization": secrets.GATEWAY_KEY,
    "x-portkey-api-key": secrets.PORTKEY_KEY,
    "helicone-auth": secrets.HELICONE_KEY,
    "openai-organization": secrets.OPENAI_ORG,
    "Set-Cookie (answer)": secrets.COOKIE,
    "openai-project (answer)": secrets.OPENAI_PROJECT,
}
URL = f"{ECHO}?alt=json&key={secrets.QUERY_KEY}&api_key={secrets.GOOGLE_KEY}"
HEADERS = {
    "authorization": f"Bearer {secrets.OPENAI_KEY}",
    "x-api-key": secrets.ANTHROPIC_KEY,
    "cf-aig-authorization": f"Bearer {secrets.GATEWAY_KEY}",
    "x-portkey-api-key": secrets.PORTKEY_KEY,
    "helicone-auth": f"Bearer {secrets.HELICONE_KEY}",
    "openai-organization": secrets.OPENAI_ORG,
}


def leaked(output: str) -> list[str]:
    """The places whose planted secret appears in the output, raw or encoded."""
    return [
        place
        for place, secret in PLANTED.items()
        if any(form.decode() in output for form in encodings(secret) if form.isascii())
    ]


def exchange(proxy: Mitmdump, prompt: str) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.url, verify=context, trust_env=False, timeout=30) as http:
        return http.post(URL, headers=HEADERS, json={"prompt": prompt, "api_key": secrets.BODY_KEY})


def console_of(proxy: Mitmdump) -> str:
    """Everything mitmdump printed (the log file is its stdout and stderr), once it stopped."""
    assert proxy.stop() == 0
    return proxy.log()


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch, fake) -> None:
    """A 200-column console (no URL cut short), and answers carrying a cookie and accounts."""
    monkeypatch.setenv("COLUMNS", "200")
    fake.answer_headers = [
        ("Set-Cookie", f"__cf_bm={secrets.COOKIE}; path=/; HttpOnly; Secure"),
        ("openai-project", secrets.OPENAI_PROJECT),
    ]


def assert_shown_redacted(output: str, detail: int) -> None:
    """The flows were printed (not hidden), with the marker where each secret was."""
    flow_lines = "<< 200 OK" in output
    assert flow_lines == (detail > 0)
    if detail == 0:
        return
    assert "key=%3Credacted%3E" in output and "alt=json" in output
    if detail >= 2:
        assert "authorization: <redacted>" in output and "x-api-key: <redacted>" in output
    if detail >= 3:
        assert '"api_key": "<redacted>"' in output and '"prompt": "first"' in output


@pytest.mark.parametrize("detail", [0, 1, 2, 3, 4])
def test_record_mode_console_carries_no_secret(start_proxy, wide_console, detail: int) -> None:
    proxy = start_proxy("record", flow_detail=str(detail))
    miss = exchange(proxy, "first")  # forwarded upstream, which echoes every secret back
    hit = exchange(proxy, "first")
    assert miss.headers["x-provider-cache"] == "miss" and secrets.QUERY_KEY in miss.text
    assert hit.headers["x-provider-cache"] == "hit"
    output = console_of(proxy)
    assert leaked(output) == []
    assert_shown_redacted(output, detail)


@pytest.mark.parametrize("detail", [0, 1, 2, 3, 4])
def test_replay_mode_console_carries_no_secret(start_proxy, wide_console, detail: int) -> None:
    recorder = start_proxy("record", flow_detail="0")
    assert exchange(recorder, "first").headers["x-provider-cache"] == "miss"
    assert recorder.stop() == 0
    proxy = start_proxy("replay", flow_detail=str(detail))
    hit = exchange(proxy, "first")
    miss = exchange(proxy, "never recorded")  # answered locally: the 404 names the URL
    assert hit.headers["x-provider-cache"] == "hit" and miss.status_code == 404
    output = console_of(proxy)
    assert leaked(output) == []
    assert_shown_redacted(output, detail)


def test_traffic_not_cached_is_printed_redacted_too(start_proxy, wide_console) -> None:
    """A secret is one wherever it goes: hosts passed through (intercepted, as allow_hosts=.
    asks, so that mitmdump sees their requests) are redacted on the console too."""
    proxy = start_proxy("record", flow_detail="3", cache_hosts="api.anthropic.com", allow_hosts=".")
    answer = exchange(proxy, "first")
    assert "x-provider-cache" not in answer.headers and secrets.QUERY_KEY in answer.text
    output = console_of(proxy)
    assert leaked(output) == []
    assert_shown_redacted(output, 3)
