"""The remote tier's storage (SPEC §11) against a real S3 API server (moto's server mode, in its
own process) through boto3 over HTTP: write-once puts, listings, and failures that are bounded
in time and said in one line without a secret."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from provider_cache.core.keys import KEY_VERSION
from provider_cache.core.remoteobject import parse_location
from provider_cache.storage.remote import (
    MISSING_BOTO3,
    PROBE_OBJECT,
    ProbeResult,
    RemoteError,
    RemoteStore,
)
from tests.support.s3server import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    Bucket,
    closed_endpoint,
    failing_endpoint,
    silent_endpoint,
)

#: Starts a server process (once per session) and waits on timeouts: the slow lane.
pytestmark = pytest.mark.slow

KEY = "ab" * 32
OTHER = "cd" * 32
#: Timeouts of the failure tests: small, so they stay quick, and the bound is checked.
TIMEOUT = 0.3
SLACK = 1.0


def store(url: str, **kwargs: float) -> RemoteStore:
    return RemoteStore(parse_location(url), **kwargs)


def key(n: int) -> str:
    return f"{n:064x}"


def assert_one_clean_line(error: Exception, *names: str) -> None:
    """One line naming what failed, and nothing of the credentials."""
    text = str(error)
    assert "\n" not in text and len(text) < 300, text
    assert AWS_SECRET_ACCESS_KEY not in text and AWS_ACCESS_KEY_ID not in text
    for signed in ("StringToSign", "CanonicalRequest", "X-Amz-", "Credential=", "AWS4-HMAC"):
        assert signed not in text, text
    for name in names:
        assert name in text


# --- reads and write-once puts ---------------------------------------------------------------


def test_a_missing_key_is_none(s3: Bucket) -> None:
    assert store(s3.url).get(KEY) is None


def test_put_once_then_get_round_trips(s3: Bucket) -> None:
    remote = store(s3.url)
    assert remote.put_once(KEY, b"\x00entry bytes\xff") is True
    assert remote.get(KEY) == b"\x00entry bytes\xff"
    assert remote.get(OTHER) is None


def test_the_object_is_named_by_prefix_key_version_and_key(s3: Bucket) -> None:
    store(s3.url).put_once(KEY, b"x")
    listed = s3.server.client().list_objects_v2(Bucket=s3.name)["Contents"]
    assert [o["Key"] for o in listed] == [f"team/cache/v{KEY_VERSION}/{KEY}"]


def test_a_second_put_once_is_false_and_leaves_the_first_object(s3: Bucket) -> None:
    remote = store(s3.url)
    assert remote.put_once(KEY, b"first") is True
    assert remote.put_once(KEY, b"second") is False
    assert remote.get(KEY) == b"first"


def test_concurrent_writers_of_one_key_write_it_once(s3: Bucket) -> None:
    remote = store(s3.url)
    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(lambda n: remote.put_once(KEY, b"writer %d" % n), range(8)))
    assert written.count(True) == 1
    assert remote.get(KEY) == b"writer %d" % written.index(True)


def test_delete_removes_an_object_and_a_missing_one_is_fine(s3: Bucket) -> None:
    remote = store(s3.url)
    remote.put_once(KEY, b"x")
    remote.delete(KEY)
    assert remote.get(KEY) is None
    remote.delete(KEY)
    assert remote.put_once(KEY, b"again") is True


def test_a_bad_key_is_refused_before_any_request(s3: Bucket) -> None:
    with pytest.raises(ValueError):
        store(s3.url).get("../../etc/passwd")


# --- listings ---------------------------------------------------------------------------------


def test_keys_lists_every_entry_across_pages(s3: Bucket) -> None:
    """Over 1000 objects: S3 answers 1000 a page, so the listing must follow the pages."""
    client = s3.server.client()
    names = [f"team/cache/v{KEY_VERSION}/{key(n)}" for n in range(1001)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: client.put_object(Bucket=s3.name, Key=name, Body=b""), names))
    remote = store(s3.url)
    assert list(remote.keys()) == [key(n) for n in range(1001)]


def test_keys_skips_other_objects_and_other_prefixes(s3: Bucket) -> None:
    client = s3.server.client()
    for name in [
        f"team/cache/probe/{PROBE_OBJECT}",
        f"team/cache/v{KEY_VERSION + 1}/{KEY}",
        f"team/cache/v{KEY_VERSION}/not-a-key",
        f"team/other/v{KEY_VERSION}/{OTHER}",
        f"team/cache-2/v{KEY_VERSION}/{OTHER}",
    ]:
        client.put_object(Bucket=s3.name, Key=name, Body=b"")
    remote = store(s3.url)
    remote.put_once(KEY, b"12345")
    assert list(remote.keys()) == [KEY]
    [info] = remote.objects()
    assert (info.key, info.size) == (KEY, 5)
    assert abs(info.modified - time.time()) < 60


def test_an_empty_bucket_lists_nothing(s3: Bucket) -> None:
    assert list(store(s3.url).keys()) == []


# --- the probe --------------------------------------------------------------------------------


def test_the_probe_finds_a_bucket_readable_and_writable(s3: Bucket) -> None:
    remote = store(s3.url)
    first, again = remote.probe(write=True), remote.probe(write=True)
    assert (first.readable, first.writable, first.reason) == (True, True, None)
    assert (again.readable, again.writable) == (True, True)
    listed = s3.server.client().list_objects_v2(Bucket=s3.name)["Contents"]
    assert [o["Key"] for o in listed] == [f"team/cache/probe/{PROBE_OBJECT}"]
    assert list(remote.keys()) == []


def test_a_read_only_probe_writes_nothing(s3: Bucket) -> None:
    result = store(s3.url).probe(write=False)
    assert (result.readable, result.writable) == (True, None)
    assert "Contents" not in s3.server.client().list_objects_v2(Bucket=s3.name)


# --- failures: one line, bounded in time, no secret ------------------------------------------


def test_a_bucket_that_does_not_exist(s3: Bucket) -> None:
    remote = store("s3://no-such-bucket-here/p")
    calls = [lambda: remote.get(KEY), lambda: remote.put_once(KEY, b"x"), lambda: [*remote.keys()]]
    for call in calls:
        with pytest.raises(RemoteError) as failed:
            call()
        assert failed.value.code == "NoSuchBucket"
        assert not failed.value.transient
        assert_one_clean_line(failed.value, "s3://no-such-bucket-here/p", "NoSuchBucket", "404")
    probe = remote.probe(write=True)
    assert (probe.readable, probe.writable) == (False, False)
    assert probe.reason is not None
    assert_one_clean_line(RemoteError(probe.reason, "", False), "NoSuchBucket")


def timed(call: Callable[[], object]) -> tuple[RemoteError, float]:
    started = time.monotonic()
    with pytest.raises(RemoteError) as failed:
        call()
    return failed.value, time.monotonic() - started


def test_a_server_that_is_down_fails_fast_in_one_line(
    aws_endpoint: Callable[[str], None],
) -> None:
    endpoint = closed_endpoint()
    aws_endpoint(endpoint)
    remote = store("s3://team-cache/p", timeout=TIMEOUT, attempts=2)
    for call in (lambda: remote.get(KEY), lambda: remote.put_once(KEY, b"x")):
        error, elapsed = timed(call)
        assert elapsed < 2 * TIMEOUT + SLACK
        assert (error.code, error.transient) == ("connect", True)
        assert_one_clean_line(error, "s3://team-cache/p", "cannot connect", endpoint)


def test_a_server_that_never_answers_fails_within_the_timeout(
    aws_endpoint: Callable[[str], None],
) -> None:
    with silent_endpoint() as endpoint:
        aws_endpoint(endpoint)
        remote = store("s3://team-cache/p", timeout=TIMEOUT, attempts=2)
        for call in (lambda: remote.get(KEY), lambda: remote.put_once(KEY, b"x")):
            error, elapsed = timed(call)
            assert 2 * TIMEOUT <= elapsed < 2 * TIMEOUT + SLACK
            assert (error.code, error.transient) == ("timeout", True)
            assert_one_clean_line(error, "s3://team-cache/p", f"within {TIMEOUT:g} s")
        error, elapsed = timed(lambda: list(remote.keys()))
        assert elapsed < 2 * TIMEOUT + SLACK


def test_an_endpoint_is_named_without_what_its_url_could_carry(
    aws_endpoint: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_endpoint().rsplit(":", 1)[1]
    aws_endpoint(closed_endpoint())
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://me:{AWS_SECRET_ACCESS_KEY}@127.0.0.1:{port}/x")
    error, _ = timed(lambda: store("s3://team-cache/p", timeout=TIMEOUT, attempts=1).get(KEY))
    assert_one_clean_line(error, f"cannot connect to http://127.0.0.1:{port} ")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"not a url {AWS_SECRET_ACCESS_KEY}")
    error, _ = timed(lambda: store("s3://team-cache/p"))
    assert error.code == "config"
    assert_one_clean_line(error, "unusable AWS configuration")


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [(500, "InternalError", True), (503, "SlowDown", True), (403, "AccessDenied", False)],
)
def test_an_error_answer_is_retried_only_when_a_retry_may_help(
    aws_endpoint: Callable[[str], None], status: int, code: str, transient: bool
) -> None:
    with failing_endpoint(status, code) as endpoint:
        aws_endpoint(endpoint.url)
        remote = store("s3://team-cache/p", timeout=TIMEOUT, attempts=3)
        error, elapsed = timed(lambda: remote.put_once(KEY, b"x"))
    assert (error.code, error.transient) == (code, transient)
    assert endpoint.requests == (3 if transient else 1)
    assert elapsed < SLACK
    assert_one_clean_line(error, f"put {KEY[:12]}: {code} (HTTP {status})")


def test_the_probe_of_a_silent_server_keeps_its_deadline(
    aws_endpoint: Callable[[str], None],
) -> None:
    with silent_endpoint() as endpoint:
        aws_endpoint(endpoint)
        remote = store("s3://team-cache/p", timeout=5.0)
        started = time.monotonic()
        result = remote.probe(write=True, timeout=0.5)
        assert time.monotonic() - started < 0.5 + 0.3
    assert (result.readable, result.writable) == (False, False)
    assert result.reason == "remote s3://team-cache/p: probe: no answer within 0.5 s"


def test_the_probe_of_a_server_that_is_down_says_why(aws_endpoint: Callable[[str], None]) -> None:
    aws_endpoint(closed_endpoint())
    result = store("s3://team-cache/p", timeout=TIMEOUT).probe(write=False)
    assert (result.readable, result.writable) == (False, None)
    assert result.reason is not None and "cannot connect" in result.reason


# --- credentials: what a read-only job can do, and secrets kept out of every line -------------


def as_user(monkeypatch: pytest.MonkeyPatch, keys: tuple[str, str]) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys[1])


def test_a_read_only_job_reads_and_its_probe_finds_writes_refused(
    s3_auth: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(s3_auth.url).put_once(KEY, b"recorded on main")
    reader = s3_auth.server.create_user(f"reader-{s3_auth.name}", ["s3:GetObject", "s3:ListBucket"])
    as_user(monkeypatch, reader)
    remote = store(s3_auth.url)
    assert remote.get(KEY) == b"recorded on main"
    assert remote.get(OTHER) is None
    assert list(remote.keys()) == [KEY]
    probe = remote.probe(write=True)
    assert (probe.readable, probe.writable) == (True, False)
    assert probe.reason == f"remote {s3_auth.url}: probe write: AccessDenied (HTTP 403)"
    with pytest.raises(RemoteError) as refused:
        remote.put_once(OTHER, b"from a pull request")
    assert (refused.value.code, refused.value.transient) == ("AccessDenied", False)
    as_user(monkeypatch, s3_auth.server.admin)
    assert store(s3_auth.url).get(OTHER) is None


def test_a_writer_job_probes_writable(s3_auth: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    actions = ["s3:GetObject", "s3:PutObject", "s3:ListBucket"]
    as_user(monkeypatch, s3_auth.server.create_user(f"writer-{s3_auth.name}", actions))
    assert store(s3_auth.url).probe(write=True) == ProbeResult(True, True)


def test_a_wrong_secret_is_refused_in_a_line_without_it(
    s3_auth: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SignatureDoesNotMatch answers quote the string to sign: none of it reaches our line."""
    as_user(monkeypatch, (s3_auth.server.admin[0], AWS_SECRET_ACCESS_KEY))
    remote = store(s3_auth.url)
    calls = [lambda: remote.get(KEY), lambda: remote.put_once(KEY, b"x"), lambda: [*remote.keys()]]
    for call in calls:
        with pytest.raises(RemoteError) as refused:
            call()
        assert refused.value.code == "SignatureDoesNotMatch"
        assert_one_clean_line(refused.value, s3_auth.url, "SignatureDoesNotMatch (HTTP 403)")
    probe = remote.probe(write=True)
    assert probe.reason is not None and AWS_SECRET_ACCESS_KEY not in probe.reason
    assert AWS_SECRET_ACCESS_KEY not in s3_auth.server.log()


def test_an_unknown_access_key_is_refused(s3_auth: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    as_user(monkeypatch, (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY))
    with pytest.raises(RemoteError) as refused:
        store(s3_auth.url).get(KEY)
    assert refused.value.code == "InvalidAccessKeyId"
    assert_one_clean_line(refused.value, "InvalidAccessKeyId (HTTP 403)")


def test_a_missing_aws_profile_is_one_line(s3: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(RemoteError) as failed:
        store(s3.url)
    assert failed.value.code == "config"
    assert_one_clean_line(failed.value, s3.url, "ProfileNotFound")


def test_without_credentials_requests_go_unsigned(
    s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull-request job with no credentials at all can still read a public object."""
    remote = store(s3.url)
    remote.put_once(KEY, b"public")
    remote.put_once(OTHER, b"private")
    name = parse_location(s3.url).object_name(KEY)
    s3.server.client().put_object_acl(Bucket=s3.name, Key=name, ACL="public-read")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    anonymous = store(s3.url)
    assert anonymous.get(KEY) == b"public"
    with pytest.raises(RemoteError) as refused:
        anonymous.get(OTHER)
    assert refused.value.code in ("AccessDenied", "403")


def test_without_boto3_the_store_says_how_to_install_it(tmp_path: object) -> None:
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from provider_cache.core.remoteobject import parse_location\n"
        "from provider_cache.storage.remote import RemoteError, RemoteStore\n"
        "try:\n"
        "    RemoteStore(parse_location('s3://team-cache/p'))\n"
        "except RemoteError as e:\n"
        "    print(e.code, e, sep='|')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"boto3|{MISSING_BOTO3}"
