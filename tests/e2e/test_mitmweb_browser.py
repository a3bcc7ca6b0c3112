"""mitmweb in a real browser (SPEC §8): markers, comments, filters, and a command from the UI.

Real mitmweb with the addon, real traffic through its proxy port, Debian's Chromium
driven by Playwright (no browser download: `executable_path`). `./dev test` installs
Chromium where it can; elsewhere this test is skipped and says why.

The screenshot in the README (docs/mitmweb.png) is taken here. It goes to the test's
tmp dir; to regenerate the committed one:

    PROVIDER_CACHE_SCREENSHOT=docs/mitmweb.png ./dev test tests/e2e/test_mitmweb_browser.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from websockets.exceptions import ConnectionClosed

from provider_cache.storage.store import Store
from tests.conftest import PROVIDER_HOSTS
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import Mitmdump, free_port

pytestmark = pytest.mark.timeout(120)

OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
ENDPOINT = "http://provider-cache.internal/stats"
#: Chromium on a closed network: no sandbox (root), no GPU, and none of its background traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
UI_TIMEOUT_MS = 10_000
#: Tall enough that the virtualised flow list renders every row, wide enough for full comments.
VIEWPORT = {"width": 1760, "height": 900}


def chromium() -> str:
    """Debian's Chromium, or the one PROVIDER_CACHE_CHROMIUM names; else skip, saying why."""
    candidates = [os.environ.get("PROVIDER_CACHE_CHROMIUM", "")]
    candidates += [shutil.which(name) or "" for name in ("chromium", "chromium-browser")]
    for path in filter(None, candidates):
        if os.access(path, os.X_OK):
            return path
    pytest.skip(
        "Chromium is not installed and could not be: ./dev test installs Debian's `chromium` "
        "only as root with apt-get (or set PROVIDER_CACHE_CHROMIUM to a Chromium binary)"
    )


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"mitmweb's web UI did not listen on port {port} within {timeout}s")


@pytest.fixture
def browser_path() -> str:
    return chromium()


@pytest.fixture
def mitmweb(tmp_path: Path, fake: FakeProvider, cache_dir: Path) -> Iterator[tuple[Mitmdump, str]]:
    """mitmweb with the addon on free ports; yields the proxy and the UI's URL with its token."""
    token, web_port = secrets.token_hex(16), free_port()
    proxy = Mitmdump(
        workdir=tmp_path,
        cache_dir=cache_dir,
        program="mitmweb",
        options={
            "cache_mode": "record",
            "web_port": str(web_port),
            "web_open_browser": "false",
            "web_password": token,
            "allow_hosts": r"^localhost:",  # intercepted, to be shown: others are tunnelled
        },
        resolve=dict.fromkeys(PROVIDER_HOSTS, fake.port),
        upstream_ca=fake.ca_path,
    )
    proxy.start()
    try:
        wait_for_port(web_port)
        yield proxy, f"http://127.0.0.1:{web_port}/?token={token}"
    finally:
        proxy.stop()


@pytest.fixture
def page(browser_path: str) -> Iterator[Page]:
    """A fresh headless browser; its temporary files (profile, sockets) go to a short dir.

    Chromium keeps a unix socket in TMPDIR, and a socket path must stay under 108 bytes:
    the test's own tmp dir is too deep for it.
    """
    short = "/tmp" if os.path.isdir("/tmp") else None
    with (
        tempfile.TemporaryDirectory(
            prefix="pc-chromium-", dir=short, ignore_cleanup_errors=True
        ) as temp,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=browser_path,
            args=CHROMIUM_ARGS,
            env={**os.environ, "TMPDIR": temp},
            timeout=30_000,
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def client() -> httpx.Client:
    """Through the proxy that `use_proxy` put in the environment, trusting its CA."""
    return httpx.Client(timeout=10)


def chat(content: str) -> str:
    """x-provider-cache of one chat completion through the proxy."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    headers = {"authorization": "Bearer sk-browser-test-0001"}
    with client() as c:
        response = c.post(OPENAI, json=body, headers=headers)
    response.raise_for_status()
    return response.headers["x-provider-cache"]


def send_traffic(fake: FakeProvider) -> dict[str, str]:
    """Misses, a hit and a passthrough request; returns the key of each prompt."""
    assert [chat("Say hello"), chat("Say hello")] == ["miss", "hit"]
    assert chat("Translate goodbye") == "miss"
    body = {"model": "claude-3-5-haiku", "max_tokens": 64, "messages": []}
    body["messages"] = [{"role": "user", "content": "Summarise this"}]
    with client() as c:
        c.post(ANTHROPIC, json=body, headers={"x-api-key": "sk-ant-browser"}).raise_for_status()
        assert c.get(f"{fake.base_url}/v1/echo").status_code == 200  # not a provider
        stats = c.get(ENDPOINT).json()
    return {m["request"]["body"]: m["key"] for m in stats["missed"]}


def key_of(keys: dict[str, str], prompt: str) -> str:
    (key,) = [key for body, key in keys.items() if prompt in body]
    return key


def rows(page: Page, text: str = ""):
    found = page.locator("tbody tr:has(td.col-path)")
    return found.filter(has_text=text) if text else found


def search(page: Page, expression: str) -> None:
    box = page.get_by_placeholder("Search")
    box.fill(expression)
    box.evaluate("e => e.blur()")  # closes the filter help that covers the flow list


def run_command(page: Page, line: str) -> None:
    """Type a command into mitmweb's command bar, as a user does."""
    bar = page.get_by_placeholder("Enter command")
    if not bar.is_visible():
        page.get_by_text("Options", exact=True).click()
        page.get_by_text("Display Command Bar").click()
    bar.fill(line)
    bar.press("Enter")


def mark_red(page: Page, row) -> None:
    """Select the flow and pick 🔴 from the Flow tab's Mark menu, as a user does."""
    row.locator("td.col-path").click()
    page.get_by_text("Flow", exact=True).click()
    page.get_by_text("Mark▾").click()
    page.get_by_text("red circle").click()
    expect(row.locator(".marker")).to_have_text("🔴")


def screenshot(page: Page, tmp_path: Path) -> Path:
    """The flow list with every comment in full; copied where PROVIDER_CACHE_SCREENSHOT says."""
    page.locator("th.col-comment .col-resize-handle").dblclick()
    path_handle = page.locator("th.col-path .col-resize-handle")
    path_handle.dblclick()  # fitted to the longest URL, then a little room for the marker
    box = path_handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 24, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    page.mouse.move(0, VIEWPORT["height"] - 1)  # no hover highlight in the picture
    last = rows(page).last.bounding_box()
    path = tmp_path / "mitmweb.png"
    clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": last["y"] + last["height"] + 8}
    page.screenshot(path=path, clip=clip)
    if target := os.environ.get("PROVIDER_CACHE_SCREENSHOT"):
        shutil.copyfile(path, target)
    return path


def test_mitmweb_marks_hits_and_misses_and_forgets_from_the_command_bar(
    mitmweb, page: Page, fake: FakeProvider, use_proxy, cache_dir: Path, tmp_path: Path
) -> None:
    proxy, ui = mitmweb
    use_proxy(proxy)
    keys = send_traffic(fake)
    hello = key_of(keys, "Say hello")

    page.goto(ui)
    hit = rows(page, "cache hit")
    expect(hit).to_have_count(1)
    expect(hit.locator(".marker")).to_have_text("✅")
    expect(hit.locator("td.col-comment")).to_contain_text(f"key {hello}")
    expect(hit.locator("td.col-comment")).to_contain_text(" UTC")
    expect(rows(page, "cache miss")).to_have_count(3)
    for marker in rows(page, "cache miss").locator(".marker").all():
        expect(marker).to_have_text("❌")
    expect(rows(page, "cache miss · forwarded · recorded")).to_have_count(3)
    endpoint_rows = rows(page, "provider-cache.internal")
    expect(endpoint_rows.first.locator(".marker")).to_have_text("📊")
    expect(endpoint_rows.first.locator("td.col-comment")).to_have_text(
        "provider-cache endpoint · not counted"
    )
    passthrough = rows(page, "/v1/echo")
    expect(passthrough.locator(".marker")).to_have_text("")
    expect(passthrough.locator("td.col-comment")).to_have_text("")

    # The README's filter expressions, in mitmweb's own filter implementation.
    for expression, count in [
        ('~comment "cache miss"', 3),
        ('~comment "cache hit"', 1),
        ("~replays", 1),
        ("~d api.openai.com", 3),
        ('~d api.openai.com & ~comment "cache miss"', 2),
        ("~hs x-provider-cache", 4),
        (f"~comment {hello[:12]}", 2),
    ]:
        search(page, expression)
        expect(rows(page), expression).to_have_count(count)
    search(page, "")
    expect(rows(page, "api.")).to_have_count(4)
    assert screenshot(page, tmp_path).stat().st_size > 10_000

    # The README's two ways to forget one entry: by a key prefix, and by marking the flow.
    run_command(page, f'cache.forget "~comment {hello[:12]}"')
    expect(page.get_by_text("provider-cache: forgot 1 of 1 entries")).to_be_visible()
    expect(hit.locator("td.col-comment")).to_contain_text("forgotten")
    goodbye = key_of(keys, "Translate goodbye")
    mark_red(page, rows(page, goodbye))
    run_command(page, 'cache.forget "~marker red"')
    expect(page.get_by_text("provider-cache: forgot 1 of 1 entries")).to_have_count(2)
    with Store(cache_dir, readonly=True) as store:
        assert store.get(hello.encode()) is None
        assert store.get(goodbye.encode()) is None
        assert store.get(key_of(keys, "Summarise this").encode()) is not None

    served = fake.served
    assert chat("Say hello") == "miss"  # forgotten: forwarded and recorded again
    assert fake.served == served + 1
    expect(rows(page, "cache miss")).to_have_count(4)


def test_mitmweb_shows_a_stored_websocket_session_and_where_a_live_one_diverged(
    page: Page, tmp_path: Path
) -> None:
    """A session recorded by mitmdump, then `cache.load` in mitmweb: its flow lists the
    messages with their directions; a replayed session that says something else is ❌
    `diverged at client message N`."""
    from tests.e2e.test_websocket import SCRIPTS, open_session
    from tests.support.fake_ws import FakeWebSocketProvider

    url, headers, _opening, script = SCRIPTS["openai-responses"]
    cache_dir = tmp_path / "cache"
    with FakeWebSocketProvider(tmp_path / "fake-ws") as fake:
        recording = Mitmdump(
            workdir=tmp_path,
            cache_dir=cache_dir,
            options={"cache_mode": "record"},
            resolve={"api.openai.com": fake.port},
            upstream_ca=fake.ca_path,
        ).start()
        with open_session(recording, url, headers) as ws:
            ws.send(script[0][0])
            answers = [ws.recv(timeout=5) for _ in range(script[0][1])]
        recording.stop()
    token, web_port = secrets.token_hex(16), free_port()
    web = Mitmdump(
        workdir=tmp_path,
        cache_dir=cache_dir,
        program="mitmweb",
        options={
            "cache_mode": "replay",
            "web_port": str(web_port),
            "web_open_browser": "false",
            "web_password": token,
        },
        resolve={"api.openai.com": free_port()},  # no provider: replay only
    ).start()
    try:
        wait_for_port(web_port)
        page.goto(f"http://127.0.0.1:{web_port}/?token={token}")
        run_command(page, "cache.load")
        stored = rows(page, f"websocket, {1 + len(answers)} messages")
        expect(stored).to_have_count(1)
        expect(stored.locator(".marker")).to_have_text("💾")
        stored.locator("td.col-path").click()
        page.get_by_text("WebSocket", exact=True).click()
        expect(page.get_by_text(answers[-1][:40])).to_be_visible()

        with open_session(web, url, headers) as ws:
            ws.send('{"type": "response.create", "input": "something else"}')
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
        diverged = rows(page, "diverged at client message 0")
        expect(diverged).to_have_count(1)
        expect(diverged.locator(".marker")).to_have_text("❌")
        page.get_by_text("Flow List", exact=True).click()  # the menu with the Search box
        search(page, "~websocket")  # docs/mitmweb.md's filter: the stored and the live one
        expect(rows(page)).to_have_count(2)
    finally:
        web.stop()
