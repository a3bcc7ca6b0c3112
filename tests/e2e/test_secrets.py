"""No planted API key reaches cache_dir, the stats file or the proxy's log (SPEC §3, §4)."""

from __future__ import annotations

import subprocess
import sys

import anthropic
import httpx
import openai

from tests.support import secrets
from tests.support.proxy import ROOT_DIR
from tests.support.secrets import files_containing_secrets


def test_no_key_in_any_form_is_written_to_disk(
    start_proxy, use_proxy, cache_dir, tmp_path, monkeypatch
) -> None:
    proxy = start_proxy("record")
    use_proxy(proxy)
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", secrets.ANTHROPIC_KEY)

    with openai.OpenAI(max_retries=0) as client:  # Authorization: Bearer
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    with anthropic.Anthropic(max_retries=0) as client:  # x-api-key
        client.messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    echo = "https://api.openai.com/v1/echo"
    google = "https://generativelanguage.googleapis.com/v1/echo"
    with httpx.Client(timeout=30) as client:
        replies = [
            client.post(echo, headers={"api-key": secrets.AZURE_KEY}, json={"q": 1}),
            client.post(google, headers={"x-goog-api-key": secrets.GOOGLE_KEY}, json={"q": 2}),
            client.get(f"{google}?key={secrets.QUERY_KEY}&alt=sse"),
            client.get(f"{echo}?api-key={secrets.AZURE_KEY}"),
            client.get(echo, headers={"authorization": f"Bearer {secrets.OPENAI_KEY}"}),
        ]
    # The provider echoes the keys back in its bodies: those copies must not be stored either.
    assert all(r.status_code == 200 for r in replies)
    assert secrets.AZURE_KEY in replies[0].text and secrets.QUERY_KEY in replies[2].text

    with httpx.Client(timeout=30) as client:  # and they replay, as hits
        again = client.post(echo, headers={"api-key": secrets.AZURE_KEY}, json={"q": 1})
    assert again.headers["x-provider-cache"] == "hit"
    assert proxy.stop() == 0

    assert (cache_dir / "data.mdb").stat().st_size > 0
    exports = [tmp_path / "export.json", tmp_path / "export.mitm"]
    for path, fmt in zip(exports, ("text", "mitm"), strict=True):
        subprocess.run(
            [
                sys.executable,
                str(ROOT_DIR / "scripts/recordings.py"),
                "--cache-dir",
                str(cache_dir),
                "export",
                "--format",
                fmt,
                "-o",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
    assert b"<redacted>" in exports[0].read_bytes()  # the echoed copies were scrubbed
    assert files_containing_secrets(cache_dir, proxy.log_path, *exports) == []
    # The scan itself finds a key where there is one.
    control = tmp_path / f"control{secrets.CONTROL_SUFFIX}"
    control.write_text(f"x{secrets.AZURE_KEY}x")
    assert files_containing_secrets(control) != []
