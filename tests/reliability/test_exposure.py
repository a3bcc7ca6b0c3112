"""What a managed proxy exposes: loopback only, a read-only endpoint, no secrets, no paths."""

from __future__ import annotations

import ssl
from urllib.parse import quote

import httpx

from tests.support import secrets
from tests.support.secrets import encodings

CHAT = "https://api.openai.com/v1/chat/completions"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def test_managed_proxy_listens_on_loopback_only(start_proxy):
    proxy = start_proxy("replay")
    assert listening_addresses(proxy.port) == {"0100007F"}  # 127.0.0.1, nothing else


def test_endpoint_is_read_only(start_proxy):
    proxy = start_proxy("replay")
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as http:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = http.request(method, "http://provider-cache.internal/stats", content=b"{}")
            assert r.status_code == 405
        for path in ("/../data.mdb", "/data.mdb", "/stats/../../etc/passwd"):
            assert http.get(f"http://provider-cache.internal{path}").status_code == 404


def test_no_secret_or_outside_path_on_the_endpoint_or_in_errors(start_proxy, tmp_path, cache_dir):
    proxy = start_proxy("replay")
    with httpx.Client(proxy=proxy.url, verify=_ctx(proxy), trust_env=False, timeout=10) as http:
        miss = http.post(
            f"{CHAT}?key={secrets.QUERY_KEY}",
            headers={"authorization": f"Bearer {secrets.OPENAI_KEY}", "api-key": secrets.AZURE_KEY},
            json={"model": "m"},
        )
        stats = http.get("http://provider-cache.internal/stats").text
        metrics = http.get("http://provider-cache.internal/metrics").text
    assert miss.status_code == 404 and "provider_cache_miss" in miss.text
    for text in (miss.text, stats, metrics):
        assert not any(s in text for s in secrets.ALL)
        assert str(tmp_path) not in text and str(proxy.confdir) not in text
    assert "key=%3Credacted%3E" in miss.text or "key=<redacted>" in miss.text


def _ctx(proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca_cert))


def test_a_replay_miss_names_no_gateway_key_signature_or_account(start_proxy, cache_dir):
    """Issue 12: the 404 of a miss, its log line and the stats name the URL redacted."""
    proxy = start_proxy("replay")
    credential = quote(secrets.AMZ_CREDENTIAL, safe="")
    url = (
        f"https://api.openai.com/v1/files/{secrets.GATEWAY_KEY}/content"
        f"?X-Amz-Credential={credential}&X-Goog-Signature={secrets.URL_SIGNATURE}"
        f"&sig={secrets.URL_SIGNATURE}&token={secrets.URL_SIGNATURE}&alt=media"
    )
    headers = {
        "cf-aig-authorization": f"Bearer {secrets.GATEWAY_KEY}",
        "x-portkey-api-key": secrets.PORTKEY_KEY,
        "helicone-auth": f"Bearer {secrets.HELICONE_KEY}",
        "openai-organization": secrets.OPENAI_ORG,
        "openai-project": secrets.OPENAI_PROJECT,
    }
    with httpx.Client(proxy=proxy.url, verify=_ctx(proxy), trust_env=False, timeout=10) as http:
        miss = http.post(url, headers=headers, json={"model": "m", "api_key": secrets.BODY_KEY})
        stats = http.get("http://provider-cache.internal/stats").text
    assert proxy.stop() == 0
    assert miss.status_code == 404 and "provider_cache_miss" in miss.text
    assert "alt=media" in miss.text and "sig=%3Credacted%3E" in miss.text
    log = proxy.log_path.read_text()
    assert "cache miss in replay mode" in log
    for text in (miss.text, stats, log, (cache_dir / "stats.json").read_text()):
        leaked = [s for s in secrets.ALL if any(f.decode() in text for f in encodings(s))]
        assert leaked == []
