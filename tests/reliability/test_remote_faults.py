"""The remote tier degrades, never breaks (SPEC §11): a remote that is down, hangs, answers 5xx
or 403, has no bucket, or holds corrupt objects, at start-up and mid-run, leaves the local tier
serving; no request waits longer than the lookup timeout; the counts say what happened.

Mid-run faults go through a front on 127.0.0.1 that relays each request to the real S3 server
(moto) until the test switches it to fail: per request, so that pooled connections fail too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from provider_cache.core.keys import KEY_VERSION
from provider_cache.mitm.remote import FAILURES_TO_PAUSE, LOOKUP_TIMEOUT
from provider_cache.storage.remote import PROBE_TIMEOUT
from tests.support.proxy import Mitmdump
from tests.support.s3server import (
    Bucket,
    S3Server,
    closed_endpoint,
    failing_endpoint,
    silent_endpoint,
)

URL = "https://api.openai.com/v1/chat/completions"
#: What a request may take beyond the lookup timeout: the proxy, the client, a loaded machine.
MARGIN = 1.5
#: A proxy's start-up without a remote takes a second or two; the probe adds at most this.
STARTUP_BOUND = PROBE_TIMEOUT + 2.0 + 10.0
SERVES_ON = "the local cache serves on without the remote tier"


def ask(content: str) -> tuple[httpx.Response, float]:
    """A chat completion through the proxy in the environment, and the seconds it took."""
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    began = time.monotonic()
    with httpx.Client(timeout=30) as client:
        response = client.post(URL, json=body)
    return response, time.monotonic() - began


def result(content: str) -> str:
    response, took = ask(content)
    assert took < LOOKUP_TIMEOUT + MARGIN, f"{content!r} took {took:.1f} s"
    return response.headers["x-provider-cache"]


def stats_of(cache: Path) -> dict:
    return json.loads((cache / "stats.json").read_text())


def alive(proxy: Mitmdump) -> bool:
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as client:
        return client.get("http://provider-cache.internal/stats").status_code == 200


@pytest.fixture
def machine(
    start_proxy: Callable[..., Mitmdump],
    use_proxy: Callable[[Mitmdump], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Mitmdump]:
    """A proxy with its own cache directory; clients use it, the test's S3 client does not."""

    def start(name: str, mode: str, **options: str) -> Mitmdump:
        proxy = start_proxy(mode, cache_dir=str(tmp_path / name), **options)
        use_proxy(proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        return proxy

    return start


# --- a switchable front of the S3 server --------------------------------------------------------


class Front:
    """http://127.0.0.1:PORT relaying to an S3 server while `mode` is "pass"; else each request
    hangs ("hang"), gets a 500 InternalError ("5xx") or a dropped connection ("drop")."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.mode = "pass"
        self.stop = threading.Event()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if front.mode == "hang":
                    front.stop.wait(60)
                    self.close_connection = True
                elif front.mode == "drop":
                    self.close_connection = True
                elif front.mode == "5xx":
                    self._answer(500, {}, b"<Error><Code>InternalError</Code></Error>")
                else:
                    self._relay(body)

            def _relay(self, body: bytes) -> None:
                conn = http.client.HTTPConnection(front.upstream, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                passed = {k: v for k, v in answer.getheaders() if k.lower() != "content-length"}
                conn.close()
                self._answer(answer.status, passed, data)

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Front]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def front(s3: Bucket, aws_endpoint: Callable[[str], None]) -> Iterator[Front]:
    """The bucket's server behind a front; the AWS configuration points at the front."""
    with Front(s3.server.endpoint).running() as relay:
        aws_endpoint(relay.url)
        yield relay


# --- at start-up --------------------------------------------------------------------------------


@contextlib.contextmanager
def broken_remote(kind: str, server: S3Server) -> Iterator[str]:
    """An endpoint URL (and bucket) that fails the start-up probe in the way named."""
    if kind == "closed":
        yield closed_endpoint()
    elif kind == "hanging":
        with silent_endpoint() as url:
            yield url
    elif kind == "5xx":
        with failing_endpoint(503, "SlowDown") as endpoint:
            yield endpoint.url
    elif kind == "403":
        with failing_endpoint(403, "AccessDenied") as endpoint:
            yield endpoint.url
    else:  # no such bucket: the real server, a bucket nobody made
        yield server.endpoint


@pytest.mark.parametrize("kind", ["closed", "hanging", "5xx", "403", "no-bucket"])
def test_a_remote_broken_at_startup_leaves_the_local_tier_serving(
    kind: str,
    machine,
    s3_server: S3Server,
    aws_endpoint: Callable[[str], None],
    tmp_path: Path,
) -> None:
    recorder = machine("a", "record")
    assert ask("recorded here")[0].status_code == 200
    assert recorder.stop() == 0
    with broken_remote(kind, s3_server) as endpoint:
        aws_endpoint(endpoint)
        remote = "s3://pc-test-nobody-made-this/cache"
        began = time.monotonic()
        proxy = machine("a", "replay", offline=True, cache_remote=remote)
        assert time.monotonic() - began < STARTUP_BOUND
        assert result("recorded here") == "hit"  # a local hit: never waits for the remote
        assert result("never recorded") == "miss"
        assert result("never recorded") == "miss"
        assert alive(proxy)
        assert proxy.stop() == 0
    log = proxy.log()
    warnings = [line for line in log.splitlines() if SERVES_ON in line]
    assert len(warnings) == 1 and remote in warnings[0], log
    assert f"remote {remote} (unavailable: local tier only)" in log
    doc = stats_of(tmp_path / "a")
    assert doc["tiers"] == {"local": 1, "remote": 0}
    assert (doc["remote"]["errors"], doc["remote"]["skipped"]) == (1, 2)  # the probe; 2 misses
    assert (doc["hits"], doc["misses"]) == (1, 2)


def test_cache_remote_write_true_stops_at_startup_when_the_remote_is_down(
    machine, aws_endpoint: Callable[[str], None], tmp_path: Path
) -> None:
    aws_endpoint(closed_endpoint())
    with pytest.raises(RuntimeError, match="exited with 1") as info:
        machine("a", "record", cache_remote="s3://team-bucket/cache", cache_remote_write="true")
    said = [line for line in last_log(tmp_path).splitlines() if "provider-cache" in line]
    assert len(said) == 1, said
    assert said[0].startswith("provider-cache: cache_remote_write=true, but remote s3://")
    assert "probe read: cannot connect to http://127.0.0.1:" in said[0]
    assert "exited with 1: provider-cache: cache_remote_write=true" in str(info.value)


def last_log(workdir: Path) -> str:
    logs = sorted(workdir.glob("mitmdump-*.log"), key=lambda p: int(p.stem.split("-")[1]))
    return logs[-1].read_text()


def test_writes_refused_stop_a_true_job_and_make_an_auto_job_read_only(
    machine, s3_auth: Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_id, secret = s3_auth.server.create_user("pull-request", ["s3:GetObject", "s3:ListBucket"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(RuntimeError, match="exited with 1") as info:
        machine("a", "record", cache_remote=s3_auth.url, cache_remote_write="true")
    assert "provider-cache: cache_remote_write=true, but remote" in str(info.value)
    assert "probe write: AccessDenied (HTTP 403)" in str(info.value)

    proxy = machine("b", "record", cache_remote=s3_auth.url)  # auto
    assert f"remote {s3_auth.url} (read-only: writes refused)" in proxy.log()
    assert result("recorded by a pull request") == "miss"
    assert proxy.stop() == 0
    remote = stats_of(tmp_path / "b")["remote"]
    assert (remote["uploaded"], remote["failed"], remote["errors"]) == (0, 0, 0)
    client = s3_auth.server.client()
    assert client.list_objects_v2(Bucket=s3_auth.name).get("KeyCount", 0) == 0


# --- mid-run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["hang", "5xx", "drop"])
def test_a_remote_failing_mid_run_costs_each_lookup_at_most_the_timeout(
    fault: str, machine, s3: Bucket, front: Front, tmp_path: Path
) -> None:
    prompts = [f"shared {n}" for n in range(FAILURES_TO_PAUSE + 2)]
    recorder = machine("a", "record", cache_remote=s3.url)
    assert [result(p) for p in prompts] == ["miss"] * len(prompts)
    assert recorder.stop() == 0  # its uploads flushed

    proxy = machine("b", "replay", offline=True, cache_remote=s3.url)
    assert result(prompts[0]) == "hit"  # from the remote
    front.mode = fault
    outcomes = [result(p) for p in prompts[1:]]  # each bounded by the lookup timeout
    assert outcomes == ["miss"] * (len(prompts) - 1)
    assert result(prompts[0]) == "hit"  # stored locally at its remote hit
    assert alive(proxy)
    front.mode = "pass"
    assert proxy.stop() == 0
    doc = stats_of(tmp_path / "b")
    assert doc["tiers"] == {"local": 1, "remote": 1}
    remote = doc["remote"]
    # After FAILURES_TO_PAUSE failures in a row the remote is paused: the rest is not asked.
    assert (remote["errors"], remote["skipped"]) == (FAILURES_TO_PAUSE, 1)
    assert "the remote is not asked for" in proxy.log()


def test_uploads_that_fail_mid_run_are_counted_listed_and_kept_locally(
    machine, s3: Bucket, front: Front, tmp_path: Path
) -> None:
    proxy = machine("a", "record", cache_remote=s3.url)
    front.mode = "hang"
    assert [result(p) for p in ("kept 1", "kept 2")] == ["miss", "miss"]
    began = time.monotonic()
    assert proxy.stop() == 0
    assert time.monotonic() - began < 10.0 + 5.0  # the bounded flush, and the exit
    doc = stats_of(tmp_path / "a")
    remote = doc["remote"]
    assert (remote["uploaded"], remote["pending"], remote["failed"]) == (0, 0, 2)
    assert len(remote["failed_keys"]) == 2
    assert "2 recorded entries not uploaded to" in proxy.log()
    front.mode = "pass"
    machine("a", "replay", offline=True)  # kept locally
    assert [result(p) for p in ("kept 1", "kept 2")] == ["hit", "hit"]


def test_transient_upload_failures_are_retried(
    machine, s3: Bucket, front: Front, tmp_path: Path
) -> None:
    proxy = machine("a", "record", cache_remote=s3.url)
    front.mode = "5xx"
    assert result("retried") == "miss"
    time.sleep(0.7)  # a try or two fail
    front.mode = "pass"
    assert proxy.stop() == 0
    remote = stats_of(tmp_path / "a")["remote"]
    assert (remote["uploaded"], remote["failed"]) == (1, 0)


# --- corrupt objects ----------------------------------------------------------------------------


def test_corrupt_objects_are_misses_and_errors_and_never_served(
    machine, s3: Bucket, tmp_path: Path
) -> None:
    recorder = machine("a", "record", cache_remote=s3.url)
    prompts = ("garbled", "another key's", "donor")
    assert [result(p) for p in prompts] == ["miss"] * 3
    assert recorder.stop() == 0
    missed = stats_of(tmp_path / "a")["missed"]
    prefix = f"team/cache/v{KEY_VERSION}/"
    garbled, swapped, donor = (
        prefix + next(m["key"] for m in missed if p in m["request"]["body"]) for p in prompts
    )
    client = s3.server.client()
    client.put_object(Bucket=s3.name, Key=garbled, Body=b"\x93not an envelope")
    theirs = client.get_object(Bucket=s3.name, Key=donor)["Body"].read()
    client.put_object(Bucket=s3.name, Key=swapped, Body=theirs)

    proxy = machine("b", "replay", offline=True, cache_remote=s3.url)
    assert [result(p) for p in ("garbled", "garbled", "another key's", "donor")] == [
        "miss",
        "miss",  # not asked again
        "miss",
        "hit",
    ]
    assert alive(proxy)
    assert proxy.stop() == 0
    doc = stats_of(tmp_path / "b")
    assert doc["remote"]["errors"] == 2 and doc["tiers"]["remote"] == 1
    assert proxy.log().count("is unusable") == 2
