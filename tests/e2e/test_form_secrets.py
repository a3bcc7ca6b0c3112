"""Secrets in form-encoded request bodies (an OAuth token request's `client_secret`, an
`api_key=` field) through a real mitmdump: never written, and keyed by presence.

The conftest scans every file the test wrote (the store, the stats file, mitmdump's log
at flow_detail=3, which prints bodies) for the planted keys afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from provider_cache.core.records import unpack_valid
from provider_cache.storage.store import Store
from tests.support import secrets

URL = "https://api.openai.com/v1/echo"
FORM = "application/x-www-form-urlencoded"


def post_form(client_secret: str) -> httpx.Response:
    body = f"grant_type=client_credentials&client_id=app&client_secret={client_secret}"
    with httpx.Client(timeout=30) as client:
        return client.post(URL, content=body.encode(), headers={"content-type": FORM})


def test_a_form_bodys_secret_is_never_written_and_counts_by_presence(
    start_proxy, use_proxy, cache_dir: Path, fake
) -> None:
    recording = start_proxy("record", flow_detail="3")
    use_proxy(recording)
    first = post_form(secrets.BODY_KEY)
    assert first.status_code == 200 and first.headers["x-provider-cache"] == "miss"
    assert secrets.BODY_KEY in first.json()["body"]  # the provider got it as sent
    assert recording.stop() == 0
    stats = json.loads((cache_dir / "stats.json").read_text())
    (missed,) = stats["missed"]
    assert "client_secret=%3Credacted%3E" in json.dumps(missed)
    with Store(cache_dir, readonly=True) as store:
        (entry,) = list(unpack_valid(store.scan(stop=lambda: False)))
    assert entry.request.body.endswith(b"client_secret=%3Credacted%3E")
    assert b"<redacted>" in entry.response.content  # the echo of it, scrubbed

    replaying = start_proxy("replay", offline=True)
    use_proxy(replaying)
    rotated = post_form("sk-PLANTED-rotated-" + "0" * 16)  # another secret: the same key
    assert rotated.status_code == 200 and rotated.headers["x-provider-cache"] == "hit"
    assert replaying.stop() == 0
    assert fake.served == 1
