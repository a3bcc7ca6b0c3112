"""Secrets in form-encoded request bodies (an OAuth token request's `client_secret`, an
`api_key=` field) through a real mitmdump: never written, and keyed by presence.

The conftest scans every file the test wrote (the store, the stats file, mitmdump's log
at flow_detail=3, which prints bodies) for the planted keys afterwards.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx

from provider_cache.core.records import Entry, unpack_valid
from provider_cache.storage.store import Store
from tests.support import secrets

URL = "https://api.openai.com/v1/echo"
FORM = "application/x-www-form-urlencoded"


def post_form(client_secret: str, *, gzipped: bool = False) -> httpx.Response:
    body = f"grant_type=client_credentials&client_id=app&client_secret={client_secret}".encode()
    headers = {"content-type": FORM}
    if gzipped:
        body, headers = gzip.compress(body), headers | {"content-encoding": "gzip"}
    with httpx.Client(timeout=30) as client:
        return client.post(URL, content=body, headers=headers)


def stored_entry(cache_dir: Path) -> Entry:
    with Store(cache_dir, readonly=True) as store:
        (entry,) = list(unpack_valid(store.scan(stop=lambda: False)))
    return entry


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
    entry = stored_entry(cache_dir)
    assert entry.request.body.endswith(b"client_secret=%3Credacted%3E")
    assert b"<redacted>" in entry.response.content  # the echo of it, scrubbed

    replaying = start_proxy("replay", offline=True, flow_detail="3")
    use_proxy(replaying)
    rotated = post_form(secrets.QUERY_KEY)  # another planted secret: the same key
    assert rotated.status_code == 200 and rotated.headers["x-provider-cache"] == "hit"
    assert replaying.stop() == 0
    assert fake.served == 1


def test_a_compressed_form_bodys_secret_is_not_stored_compressed(
    start_proxy, use_proxy, cache_dir: Path, fake
) -> None:
    """A gzip'd body keeps no secret a scan of the raw bytes would miss: the stored request
    is decoded, redacted and compressed again, and still keys as the one sent."""
    recording = start_proxy("record", flow_detail="3")
    use_proxy(recording)
    first = post_form(secrets.BODY_KEY, gzipped=True)
    assert first.status_code == 200 and secrets.BODY_KEY in first.json()["body"]
    assert recording.stop() == 0
    entry = stored_entry(cache_dir)
    assert (b"content-encoding", b"gzip") in entry.request.headers
    body = gzip.decompress(entry.request.body)
    assert body == b"grant_type=client_credentials&client_id=app&client_secret=%3Credacted%3E"

    replaying = start_proxy("replay", offline=True)
    use_proxy(replaying)
    rotated = post_form(secrets.QUERY_KEY, gzipped=True)
    assert rotated.status_code == 200 and rotated.headers["x-provider-cache"] == "hit"
    assert replaying.stop() == 0
    assert fake.served == 1


def test_a_form_with_a_content_type_beyond_latin_1_is_printed_redacted(
    start_proxy, use_proxy
) -> None:
    """The console reads the content type as sent, bytes: no text round trip to fail on."""
    recording = start_proxy("record", flow_detail="3")
    use_proxy(recording)
    content_type = f"{FORM}; profile=\u4e2d".encode()
    body = f"client_secret={secrets.BODY_KEY}&scope=all".encode()
    with httpx.Client(timeout=30) as client:
        answer = client.post(URL, content=body, headers={"content-type": content_type})
    assert answer.status_code == 200
    assert recording.stop() == 0
    log = recording.log()
    assert "client_secret: <redacted>" in log  # the body, in the form view
    assert "Traceback" not in log and "Addon error" not in log
