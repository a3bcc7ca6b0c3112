"""No planted API key reaches cache_dir, the stats file or the proxy's log (SPEC §3, §4)."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

import anthropic
import httpx
import openai

from tests.support import secrets
from tests.support.proxy import ROOT_DIR
from tests.support.secrets import encodings, files_containing_secrets


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


def test_gateway_body_url_and_account_secrets_never_reach_disk_or_output(
    start_proxy, use_proxy, fake, cache_dir, tmp_path, monkeypatch
) -> None:
    """Issue 12: secrets beyond the built-in names, and account identifiers."""
    fake.answer_headers = [
        ("Set-Cookie", f"__cf_bm={secrets.COOKIE}; path=/; HttpOnly; Secure"),
        ("openai-organization", secrets.OPENAI_ORG),
        ("openai-project", secrets.OPENAI_PROJECT),
        ("anthropic-organization-id", secrets.ANTHROPIC_ORG),
    ]
    proxy = start_proxy("record")
    use_proxy(proxy)
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)
    gateway = {"cf-aig-authorization": f"Bearer {secrets.GATEWAY_KEY}"}

    def chat(client: openai.OpenAI) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert "set-cookie" not in raw.headers or raw.headers["x-provider-cache"] == "miss"
        return raw.headers["x-provider-cache"]

    with openai.OpenAI(
        max_retries=0,
        organization=secrets.OPENAI_ORG,
        project=secrets.OPENAI_PROJECT,
        default_headers=gateway,
    ) as client:
        assert chat(client) == "miss"
        assert chat(client) == "hit"  # replayed without Set-Cookie (asserted in chat)

    echo = "https://api.openai.com/v1/echo"
    credential = quote(secrets.AMZ_CREDENTIAL, safe="")
    signed = (
        f"{echo}?X-Amz-Credential={credential}&X-Amz-Signature={secrets.URL_SIGNATURE}"
        f"&sig={secrets.URL_SIGNATURE}&X-Goog-Signature={secrets.URL_SIGNATURE}&alt=media"
    )
    with httpx.Client(timeout=30) as client:
        replies = [
            client.post(
                echo,
                headers={
                    "x-portkey-api-key": secrets.PORTKEY_KEY,
                    "helicone-auth": f"Bearer {secrets.HELICONE_KEY}",
                },
                json={"model": "m", "config": {"api_key": secrets.BODY_KEY}},
            ),
            client.get(signed),
            # a secret in the path (a 404 here, so not stored; its miss is in the stats)
            client.get(f"https://api.openai.com/v1/keys/{secrets.GATEWAY_KEY}", headers=gateway),
        ]
        again = client.get(signed)
    # The fake echoes every secret back, the credential percent-encoded: none may be stored.
    assert secrets.BODY_KEY in replies[0].text and secrets.PORTKEY_KEY in replies[0].text
    assert credential in replies[1].text
    assert replies[2].status_code == 404
    assert again.headers["x-provider-cache"] == "hit"
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as local:
        endpoint = [
            local.get(f"http://provider-cache.internal/{p}").text for p in ("stats", "metrics")
        ]
    assert proxy.stop() == 0

    def script(name: str, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT_DIR / "scripts" / name), *args],
            check=False,
            capture_output=True,
            text=True,
        )
        assert result.returncode in (0, 1), result.stderr  # 1: the gate's threshold
        return result.stdout + result.stderr

    recordings = ("recordings.py", "--cache-dir", str(cache_dir))
    listed = script(*recordings, "ls", "--json")
    keys = [json.loads(line)["key"] for line in listed.splitlines() if line.startswith("{")]
    shown = [script(*recordings, "show", key) for key in keys]
    exported = tmp_path / "export.json"
    script(*recordings, "export", "--format", "text", "-o", str(exported))
    gate = script("cache_stats.py", str(cache_dir / "stats.json"), "--format", "markdown")
    assert len(shown) == 3 and "<redacted>" in "".join(shown)
    assert "set-cookie" not in "".join(shown).lower()
    outputs = [*endpoint, listed, *shown, gate, exported.read_text()]
    for text in outputs:
        leaked = [s for s in secrets.ALL if any(f.decode() in text for f in encodings(s))]
        assert leaked == [], text
    assert files_containing_secrets(cache_dir, proxy.log_path, exported) == []
