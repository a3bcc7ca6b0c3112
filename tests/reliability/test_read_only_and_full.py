"""A read-only checkout and a full disk (SPEC §9): replay serves from a store it cannot
write, recording on a full disk says so in one line and keeps answering, and nothing
already stored is lost. Each proxy runs in its own mount namespace (`unshare -rm`, no
root needed) where the cache directory is a read-only bind mount or a tiny tmpfs."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.reliability.clients import CHAT, chat_body

JSON = {"content-type": "application/json"}


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_available(),
    reason="needs `unshare -rm` (util-linux, unprivileged user namespaces) for the mounts",
)


def read_only(directory) -> list[str]:
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, str(directory)]


def full_disk(directory, staging) -> list[str]:
    """A 1 MiB tmpfs over the cache directory, holding a copy of `staging`, then filled up."""
    script = (
        'mount -t tmpfs -o size=1m tmpfs "$0" && cp -a "$1"/. "$0"/ && '
        '(dd if=/dev/zero of="$0"/filler bs=4k 2>/dev/null; true) && shift && exec "$@"'
    )
    return ["unshare", "-rm", "sh", "-c", script, str(directory), str(staging)]


def stats(proxy) -> dict:
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as http:
        return http.get("http://provider-cache.internal/stats").json()


def record(start_proxy, use_proxy, *bodies: bytes) -> None:
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        for body in bodies:
            assert http.post(CHAT, content=body, headers=JSON).status_code == 200
    proxy.stop()


def test_replay_serves_from_a_read_only_cache_dir(start_proxy, use_proxy, fake, cache_dir):
    body = chat_body("recorded, then the checkout became read-only")
    record(start_proxy, use_proxy, body)
    proxy = start_proxy("replay", offline=True, wrapper=read_only(cache_dir))
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        answers = [http.post(CHAT, content=body, headers=JSON) for _ in range(2)]
    assert [a.headers["x-provider-cache"] for a in answers] == ["hit", "hit"]
    assert stats(proxy)["hits"] == 2
    proxy.stop()
    log = proxy.log()
    assert log.count("serving from it read-only") == 1
    assert "Traceback" not in log


def test_record_on_a_full_disk_counts_errors_and_keeps_answering(
    start_proxy, use_proxy, fake, cache_dir, tmp_path
):
    old = chat_body("stored before the disk filled up")
    record(start_proxy, use_proxy, old)
    staging = tmp_path / "staging"
    shutil.copytree(cache_dir, staging)
    proxy = start_proxy("record", wrapper=full_disk(cache_dir, staging))
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        new = [http.post(CHAT, content=chat_body(f"new {n} " + "x" * 200_000), headers=JSON)
               for n in range(3)]  # fmt: skip
        again = http.post(CHAT, content=old, headers=JSON)
    counts = stats(proxy)
    assert [a.status_code for a in new] == [200, 200, 200]  # the client got its answers
    assert again.headers["x-provider-cache"] == "hit"  # nothing stored was lost
    assert counts["recorded"] == 0 and counts["errors"] == 3
    proxy.stop()
    log = proxy.log()
    assert "Traceback" not in log and "Addon error" not in log
    assert log.count("serving from it read-only") == 1  # said once at start
    assert log.count("could not record key") == 3  # one line per answer not recorded
    # Once, with its path: not once a second, nor again at exit.
    assert log.count(f"cannot write stats file {cache_dir / 'stats.json'}: ") == 1
    assert log.count("cannot write stats file") == 1


def test_replay_starts_on_a_full_disk(start_proxy, use_proxy, fake, cache_dir, tmp_path):
    body = chat_body("replayed on a full disk")
    record(start_proxy, use_proxy, body)
    staging = tmp_path / "staging"
    shutil.copytree(cache_dir, staging)
    shutil.rmtree(staging / "usage")  # the usage log must be created: no space for it
    proxy = start_proxy("replay", offline=True, wrapper=full_disk(cache_dir, staging))
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        answer = http.post(CHAT, content=body, headers=JSON)
    assert answer.headers["x-provider-cache"] == "hit"
    proxy.stop()
    assert "Traceback" not in proxy.log()
