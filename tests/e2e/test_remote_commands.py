"""`recordings push | pull | sync | remote-rm | manifest | gc` and `rebuild --remote` (SPEC §11)
against a real S3 API server (moto's server mode, tests/support/s3server.py): scripts run as
subprocesses with the standard AWS variables of the fixture, two cache directories as two
machines. Every output is checked for the planted AWS secret and for a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from provider_cache.cli import rebuild
from provider_cache.cli.main import script_parser
from provider_cache.core import records, remoteobject
from provider_cache.core.keys import KEY_VERSION
from provider_cache.storage.store import Store
from provider_cache.storage.usage import Usage
from tests.conftest import PROVIDER_HOSTS
from tests.support import secrets
from tests.support.proxy import RESOLVE_ADDON, ROOT_DIR
from tests.support.s3server import (
    AWS_SECRET_ACCESS_KEY,
    Bucket,
    closed_endpoint,
    silent_endpoint,
)
from tests.support.suites import suite

SCRIPT = ROOT_DIR / "scripts" / "recordings.py"
CHAT = "https://api.openai.com/v1/chat/completions"


def recordings(
    cache_dir: Path, *argv: str, env: dict[str, str] | None = None, hidden: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """scripts/recordings.py with this process's AWS variables (the fixture's), never through
    a proxy; its output holds no secret and no traceback."""
    environ = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--cache-dir", str(cache_dir), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ | (env or {}),
    )
    for secret in (AWS_SECRET_ACCESS_KEY, *hidden):
        assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def entry(n: int) -> records.Entry:
    return records.Entry(
        key=hashlib.sha256(b"remote %d" % n).hexdigest(),
        recorded_at=1_800_000_000.0 + n,
        request=records.StoredRequest("POST", CHAT, [], b'{"n": %d}' % n),
        response=records.StoredResponse(200, "OK", [], b'{"answer": %d}' % n),
    )


def plant(cache_dir: Path, *made: records.Entry) -> list[str]:
    with Store(cache_dir) as store:
        store.put_many([(e.key.encode(), records.pack(e)) for e in made])
    return [e.key for e in made]


def remote_keys(bucket: Bucket) -> set[str]:
    listed = bucket.server.client().list_objects_v2(Bucket=bucket.name, Prefix="team/cache/")
    return {o["Key"].rpartition("/")[2] for o in listed.get("Contents", []) if "/v" in o["Key"]}


def manifests_of(bucket: Bucket) -> list[str]:
    prefix = "team/cache/manifests/"
    listed = bucket.server.client().list_objects_v2(Bucket=bucket.name, Prefix=prefix)
    return [o["Key"].removeprefix(prefix) for o in listed.get("Contents", [])]


def manifest(bucket: Bucket, name: str) -> set[str]:
    answer = bucket.server.client().get_object(
        Bucket=bucket.name, Key=f"team/cache/manifests/{name}"
    )
    return set(json.loads(answer["Body"].read())["keys"])


def keys_of(cache_dir: Path) -> set[str]:
    with Store(cache_dir, readonly=True) as store:
        return {k.decode() for k, _ in store.items()}


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --- push and pull ---------------------------------------------------------------------------


def ask(*contents: str, stream: bool = False) -> None:
    with httpx.Client(timeout=30, headers={"authorization": f"Bearer {secrets.OPENAI_KEY}"}) as c:
        for x in contents:
            body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": x}]}
            assert c.post(CHAT, json=body).status_code == 200


def test_push_then_pull_on_another_machine_gives_the_same_store_and_moves_only_what_is_missing(
    s3: Bucket, start_proxy, use_proxy, cache_dir, tmp_path, monkeypatch
):
    proxy = start_proxy("record")
    use_proxy(proxy)
    ask("alpha", "beta")
    ask("gamma", stream=True)
    proxy.stop()
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)  # this process's boto3 client talks to S3 straight

    pushed = recordings(cache_dir, "push", "--remote", s3.url)
    assert pushed.returncode == 0 and pushed.stdout == "pushed 3, already there 0, failed 0\n"
    assert remote_keys(s3) == keys_of(cache_dir)
    again = recordings(cache_dir, "push", "--remote", s3.url)
    assert again.stdout == "pushed 0, already there 3, failed 0\n"

    other = tmp_path / "machine-2"
    pulled = recordings(other, "pull", "--remote", s3.url)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == "pulled 3, already here 0, corrupt 0, failed 0\n"
    assert recordings(other, "export").stdout == recordings(cache_dir, "export").stdout
    assert recordings(other, "pull", "--remote", s3.url).stdout.startswith(
        "pulled 0, already here 3"
    )

    # A new entry on the second machine: sync pulls nothing and pushes only it.
    plant(other, entry(1))
    synced = recordings(other, "sync", "--remote", s3.url)
    assert synced.returncode == 0
    assert synced.stdout.splitlines() == [
        "pulled 0, already here 3, corrupt 0, failed 0",
        "pushed 1, already there 3, failed 0",
    ]
    assert entry(1).key in remote_keys(s3)


def test_dry_runs_write_nothing_here_or_there(s3: Bucket, tmp_path):
    here = tmp_path / "here"
    keys = plant(here, entry(1), entry(2))
    dry = recordings(here, "push", "--remote", s3.url, "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.splitlines() == [
        *(f"would push {k}" for k in sorted(keys)),
        "would push 2, already there 0 (--dry-run: nothing written)",
    ]
    assert remote_keys(s3) == set()

    assert recordings(here, "push", "--remote", s3.url).returncode == 0
    there = tmp_path / "there"
    for action in ("pull", "sync"):
        dry = recordings(there, action, "--remote", s3.url, "--dry-run")
        assert dry.returncode == 0
        assert dry.stdout.splitlines()[-1] == (
            "would pull 2, already here 0 (--dry-run: nothing written)"
        )
        assert not there.exists()  # not even an empty store


def test_a_corrupt_object_is_named_skipped_and_never_stored(s3: Bucket, tmp_path):
    here = tmp_path / "here"
    good, garbled, misnamed = plant(here, entry(1), entry(2), entry(3))
    assert recordings(here, "push", "--remote", s3.url).returncode == 0
    client = s3.server.client()
    prefix = f"team/cache/v{KEY_VERSION}/"
    client.put_object(Bucket=s3.name, Key=prefix + garbled, Body=b"\x00not msgpack\xff")
    # A sound envelope, of another entry: someone copied objects around.
    client.put_object(
        Bucket=s3.name, Key=prefix + misnamed, Body=remoteobject.wrap(good, records.pack(entry(1)))
    )

    there = tmp_path / "there"
    pulled = recordings(there, "pull", "--remote", s3.url)
    assert pulled.returncode == 1
    assert pulled.stdout == "pulled 1, already here 0, corrupt 2, failed 0\n"
    problems = sorted(pulled.stderr.splitlines())
    assert len(problems) == 2 and all(line.endswith(": not stored") for line in problems)
    assert f"pull: corrupt object {garbled}: undecodable object" in pulled.stderr
    assert f"pull: corrupt object {misnamed}: the object holds another key" in pulled.stderr
    assert keys_of(there) == {good}


def test_push_skips_a_local_entry_that_does_not_decode_and_exits_1(s3: Bucket, tmp_path):
    here = tmp_path / "here"
    good, bad = plant(here, entry(1), entry(2))
    with Store(here) as store:
        store.put(bad.encode(), b"\x92\x01")  # a msgpack list, not an entry
    pushed = recordings(here, "push", "--remote", s3.url)
    assert pushed.returncode == 1
    assert pushed.stdout.startswith("pushed 1, already there 0, failed 0, skipped 1 (corrupt")
    assert remote_keys(s3) == {good}


# --- rights and outages ----------------------------------------------------------------------


def test_a_read_only_job_pulls_but_cannot_push_or_delete_and_says_so_in_one_line(
    s3_auth: Bucket, tmp_path
):
    here = tmp_path / "here"
    plant(here, entry(1), entry(2))
    assert recordings(here, "push", "--remote", s3_auth.url).returncode == 0  # the admin
    key_id, secret = s3_auth.server.create_user(
        f"ci-{uuid.uuid4().hex[:8]}", ["s3:GetObject", "s3:ListBucket"]
    )
    reader = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}

    there = tmp_path / "there"
    pulled = recordings(there, "pull", "--remote", s3_auth.url, env=reader, hidden=(secret,))
    assert pulled.returncode == 0 and pulled.stdout.startswith("pulled 2,")

    plant(there, entry(3))
    pushed = recordings(there, "push", "--remote", s3_auth.url, env=reader, hidden=(secret,))
    assert pushed.returncode == 2
    line = one_line(pushed.stderr)
    assert "AccessDenied (HTTP 403)" in line and "push needs write access" in line
    assert pushed.stdout == "pushed 0, already there 2, failed 1\n"
    assert entry(3).key not in remote_keys(s3_auth)

    removed = recordings(
        there, "remote-rm", "--remote", s3_auth.url, entry(1).key, env=reader, hidden=(secret,)
    )
    assert removed.returncode == 2
    assert "remote-rm needs delete rights" in one_line(removed.stderr)
    assert entry(1).key in remote_keys(s3_auth)


def test_remote_rm_deletes_named_objects_so_a_push_can_replace_them(s3: Bucket, tmp_path):
    here = tmp_path / "here"
    first, second = plant(here, entry(1), entry(2))
    assert recordings(here, "push", "--remote", s3.url).returncode == 0
    unknown = recordings(here, "remote-rm", "--remote", s3.url, "abcdef0123")
    assert unknown.returncode == 2 and "no remote object with key abcdef0123" in unknown.stderr
    removed = recordings(here, "remote-rm", "--remote", s3.url, first[:10])
    assert removed.returncode == 0 and removed.stdout == f"removed remote object {first}\n"
    assert remote_keys(s3) == {second}
    assert recordings(here, "push", "--remote", s3.url).stdout.startswith("pushed 1,")


def test_an_unreachable_or_silent_remote_is_one_line_and_exit_2_in_bounded_time(
    aws_endpoint, tmp_path
):
    here = tmp_path / "here"
    plant(here, entry(1))
    url = "s3://team-cache/ci"
    aws_endpoint(closed_endpoint())
    down = recordings(here, "push", "--remote", url)
    assert down.returncode == 2 and "cannot connect to http://127.0.0.1:" in one_line(down.stderr)
    with silent_endpoint() as endpoint:
        aws_endpoint(endpoint)
        started = time.monotonic()
        silent = recordings(tmp_path / "there", "pull", "--remote", url)
        took = time.monotonic() - started
    assert silent.returncode == 2 and "no answer from" in one_line(silent.stderr)
    assert took < 10  # two attempts of a 2 s timeout, and the interpreter's start
    assert not (tmp_path / "there").exists()


# --- manifests and gc ------------------------------------------------------------------------


def counted_run(cache_dir: Path, hit: list[str]) -> None:
    """A run in the usage ledger that made lookups, ended cleanly and hit these keys (what a
    replay proxy leaves; tests/e2e/test_prune.py makes them with real proxies)."""
    usage = Usage(cache_dir)
    try:
        run = usage.begin_run(pid=1)
        usage.mark_hits(dict.fromkeys(hit, time.time()), run)
        usage.end_member(run, 1, len(hit))
    finally:
        usage.close()


def test_gc_keeps_what_the_newest_manifests_name_and_what_is_within_the_grace_period(
    s3: Bucket, tmp_path
):
    here = tmp_path / "here"
    a, b, c, d = plant(here, *map(entry, range(4)))
    assert recordings(here, "push", "--remote", s3.url).returncode == 0
    assert recordings(here, "manifest", "--remote", s3.url).returncode == 2  # no run yet
    counted_run(here, [a, b])
    published = recordings(here, "manifest", "--remote", s3.url)
    assert published.returncode == 0 and published.stdout.endswith(": 2 keys of run 1\n")
    counted_run(here, [b, c])
    assert recordings(here, "manifest", "--remote", s3.url).returncode == 0
    first, second = manifests_of(s3)
    assert manifest(s3, first) == {a, b} and manifest(s3, second) == {b, c}

    def gc(*argv: str) -> subprocess.CompletedProcess:
        result = recordings(here, "gc", "--remote", s3.url, *argv)
        assert result.returncode == 0, result.stderr
        return result

    assert "2 manifests of the 3 needed" in gc("--keep", "3").stdout
    young = gc("--keep", "2")  # d is named by none, but was uploaded just now
    assert "0 are named by none and older than 7d, 1 more are within it" in young.stdout
    assert remote_keys(s3) == {a, b, c, d}
    dry = gc("--keep", "2", "--grace", "0s", "--dry-run").stdout.splitlines()
    assert dry[1:] == [
        f"would remove {d}",
        "would remove 1 objects and 0 old manifests (--dry-run: nothing removed)",
    ]
    assert remote_keys(s3) == {a, b, c, d}
    removed = gc("--keep", "2", "--grace", "0s")
    assert removed.stdout.splitlines()[-1] == "removed 1 objects and 0 old manifests, failed 0"
    assert remote_keys(s3) == {a, b, c}
    gc("--keep", "1", "--grace", "0s")  # only the newest manifest protects now
    assert remote_keys(s3) == {b, c}
    assert manifests_of(s3) == [first, second]  # manifests go only far beyond --keep


def test_gc_refuses_to_remove_anything_while_a_kept_manifest_is_unreadable(s3: Bucket, tmp_path):
    here = tmp_path / "here"
    plant(here, entry(1))
    assert recordings(here, "push", "--remote", s3.url).returncode == 0
    name = "20250101T000000.000Z-00000000.json"
    s3.server.client().put_object(
        Bucket=s3.name, Key=f"team/cache/manifests/{name}", Body=b"{not json"
    )
    result = recordings(here, "gc", "--remote", s3.url, "--keep", "1", "--grace", "0s")
    assert result.returncode == 2
    assert f"manifest {name} is unreadable: not JSON" in one_line(result.stderr)
    assert remote_keys(s3) == {entry(1).key}


# --- rebuild --remote ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.at = time.time()

    def now(self) -> float:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.at += seconds


def test_rebuild_pushes_and_names_what_a_verified_run_used_and_nothing_unverified(
    s3: Bucket, fake, cache_dir, tmp_path, monkeypatch, capsys, aws_endpoint
):
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)
    argv = ["--cache-dir", str(cache_dir), "--confdir", str(tmp_path / "conf")]
    argv += [
        "--script",
        str(RESOLVE_ADDON),
        "--set",
        f"ssl_verify_upstream_trusted_ca={fake.ca_path}",
    ]
    for host in PROVIDER_HOSTS:
        argv += ["--set", f"test_resolve={host}=127.0.0.1:{fake.port}"]
    argv += ["--min-hit-rate", "1.0", "--max-attempts", "1", "--remote", s3.url, "--force"]
    argv += ["--", *suite(tmp_path, ["a", "b"])]

    def run() -> tuple[int, str]:
        parsed = script_parser("cache_rebuild").parse_args(argv)
        code = rebuild.main(parsed, FakeClock(), random.Random(0))
        out = capsys.readouterr().out
        assert AWS_SECRET_ACCESS_KEY not in out
        return code, out

    fake.fail_next = [(500, {})]  # the record run fails: the rebuild cannot verify
    code, out = run()
    assert code == 1 and "pushing" not in out
    assert remote_keys(s3) == set() and manifests_of(s3) == []

    code, out = run()  # the provider recovered: recorded and verified
    assert code == 0, out
    assert "pushed 2, already there 0, failed 0" in out and "published manifest" in out
    assert remote_keys(s3) == keys_of(cache_dir) and len(keys_of(cache_dir)) == 2
    [name] = manifests_of(s3)
    assert manifest(s3, name) == keys_of(cache_dir)

    code, out = run()  # nothing to rebuild: the verified check names its keys again
    assert code == 0 and "pushed 0, already there 2, failed 0" in out
    assert len(manifests_of(s3)) == 2

    aws_endpoint(closed_endpoint())  # verified, but the remote is down: said, and exit 1
    code, out = run()
    assert code == 1
    assert "the verified entries did not reach the remote: rebuild: remote s3://" in out


@pytest.mark.parametrize("action", ["push", "pull", "sync", "gc"])
def test_a_missing_store_or_remote_option_is_one_line_exit_2(action, s3: Bucket, tmp_path):
    argv = [action, "--remote", s3.url] + (["--keep", "1"] if action == "gc" else [])
    result = recordings(tmp_path / "nothing", *argv[:1])
    assert result.returncode == 2 and "--remote" in one_line(result.stderr)
    if action == "push":
        result = recordings(tmp_path / "nothing", *argv)
        assert result.returncode == 2 and "no recordings store in" in one_line(result.stderr)
