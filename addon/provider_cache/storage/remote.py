"""The remote tier's storage (SPEC §11): write-once objects in an S3-compatible bucket.

A small byte-level map like store.Store, over boto3's S3 client, with no HTTP-cache
knowledge: the caller wraps entries (core.remoteobject) and decides what to do with a
failure. Endpoint, region and credentials come only from the standard AWS configuration
(AWS_ENDPOINT_URL, AWS_PROFILE, AWS_* variables, ~/.aws): boto3 reads it. Without any
credentials requests go unsigned, so a job with none can still read a public bucket.

Every call is bounded: connect and read timeouts and a small number of attempts, so a
remote that is down or hangs costs about `attempts * timeout` plus short pauses; a
caller that must also bound a server that trickles bytes runs the call under its own
deadline (as probe does). Failures are one RemoteError line naming the location, the
operation and an error code: never credentials, headers or signed URLs.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from provider_cache import __version__
from provider_cache.core.remoteobject import RemoteLocation

#: Seconds for a connect, and for each read, of one attempt.
DEFAULT_TIMEOUT = 2.0
#: Attempts per call, the first included: one retry of a timeout, a 5xx or a throttle.
DEFAULT_ATTEMPTS = 2
#: The start-up probe's hard wall-clock bound.
PROBE_TIMEOUT = 3.0
#: Seconds before the first retry (then twice that, ...): short, a caller is waiting.
RETRY_PAUSE = 0.1
#: Parallel connections per client: push/pull keep a small cap (R2 throttles many).
DEFAULT_CONNECTIONS = 8
MISSING_BOTO3 = "cache_remote needs boto3: pip install 'provider-cache[s3]'"
#: Put once by probe(write=True): a 412 on it proves write access as well as a 200 does.
PROBE_OBJECT = "write-check"
#: The folder of gc's manifests beside the entries (cli/remote.py names and reads them).
MANIFESTS = "manifests"
_MANIFEST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.json")

#: Answers meaning "an object already has that name": write-once succeeded before us.
#: (409 ConditionalRequestConflict: another conditional write of that name is under way.)
_ALREADY_THERE = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
#: Error codes worth trying again later (the upload queue's backoff); others will not heal.
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
)
_MAX_CODE_LENGTH = 64

T = TypeVar("T")


class RemoteError(Exception):
    """One remote call failed; str() is one line without any secret.

    `code` is the S3 error code (NoSuchBucket, AccessDenied, SlowDown, …) or one of
    timeout, connect, credentials, config, boto3, other; `transient`: may a retry help?
    """

    def __init__(self, message: str, code: str, transient: bool) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


@dataclass(frozen=True)
class ProbeResult:
    """What the start-up check found: readable, writable (None: not asked), and why not."""

    readable: bool
    writable: bool | None
    reason: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """One object in a listing (an entry's key, or a manifest's name); `modified` in epoch
    seconds (gc's grace period)."""

    key: str
    size: int
    modified: float


class RemoteStore:
    """Entries as objects `PREFIX/v<KEY_VERSION>/<key>` in one bucket; boto3 is thread-safe
    at the client level, so one RemoteStore serves the upload queue and lookups alike."""

    def __init__(
        self,
        location: RemoteLocation,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.location = location
        self.timeout = timeout
        self.attempts = attempts
        self._client = _make_client(location, timeout, connections)
        self._failures = _failure_types()
        self.endpoint = _host_of(self._client.meta.endpoint_url)

    def close(self) -> None:
        """Close the client's pooled connections (done(), the end of a command)."""
        self._client.close()

    def get(self, key: str) -> bytes | None:
        """The object stored for `key`, or None when there is none."""
        name = self.location.object_name(key)
        return self._retrying(f"get {key[:12]}", lambda: self._get(name))

    def put_once(self, key: str, data: bytes) -> bool:
        """Write `data` unless an object of that name exists: True written, False there.

        Conditional (`If-None-Match: *`), so parallel writers never replace each other's
        object; a retry after a lost answer to our own write sees False, which is right.
        """
        name = self.location.object_name(key)
        return self._retrying(f"put {key[:12]}", lambda: self._put_once(name, data))

    def delete(self, key: str) -> None:
        """Remove the object of `key` (S3 deletes are idempotent: a missing one is fine)."""
        name = self.location.object_name(key)
        bucket = self.location.bucket
        self._retrying(
            f"delete {key[:12]}", lambda: self._client.delete_object(Bucket=bucket, Key=name)
        )

    def keys(self) -> Iterator[str]:
        """The keys of every entry object, in name order."""
        return (info.key for info in self.objects())

    def objects(self) -> Iterator[ObjectInfo]:
        """Every entry object with its size and time, a page (1000) per call; other objects
        under the prefix are skipped. A failed page raises: a listing is never cut short."""
        for item in self._listing(self.location.entries):
            key = self.location.key_of(item["Key"])
            if key is not None:
                yield ObjectInfo(key, item["Size"], item["LastModified"].timestamp())

    def _listing(self, folder: str) -> Iterator[dict[str, Any]]:
        """Every object under `folder` as S3 lists it, following the pages."""
        request = {"Bucket": self.location.bucket, "Prefix": folder}
        while True:
            page = self._retrying("list", lambda: self._client.list_objects_v2(**request))
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    # -- gc's manifests: `PREFIX/manifests/<name>.json`, write-once like the entries ---------

    def manifests(self) -> Iterator[ObjectInfo]:
        """Every manifest, its file name as `key`, in name order (their names start with
        the time they were published, so: oldest first)."""
        folder = self.location.folder(MANIFESTS)
        for item in self._listing(folder):
            name = item["Key"].removeprefix(folder)
            if _MANIFEST_NAME.fullmatch(name):
                yield ObjectInfo(name, item["Size"], item["LastModified"].timestamp())

    def get_manifest(self, name: str) -> bytes | None:
        return self._retrying(f"get manifest {name}", lambda: self._get(self._manifest(name)))

    def put_manifest_once(self, name: str, data: bytes) -> bool:
        """Publish a manifest under a name no one has used: True written, False there."""
        path = self._manifest(name)
        return self._retrying(f"put manifest {name}", lambda: self._put_once(path, data))

    def delete_manifest(self, name: str) -> None:
        path, bucket = self._manifest(name), self.location.bucket
        self._retrying(
            f"delete manifest {name}",
            lambda: self._client.delete_object(Bucket=bucket, Key=path),
        )

    def _manifest(self, name: str) -> str:
        if not _MANIFEST_NAME.fullmatch(name):
            raise ValueError("not a manifest name (NAME.json: letters, digits, . _ -)")
        return self.location.folder(MANIFESTS) + name

    def probe(self, *, write: bool, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
        """Can this job read, and (when `write`) write? Answered within `timeout`, always.

        Reading is a GET of the probe object (there or not, an answer proves read access);
        writing is a put_once of it (written or already there: both prove write access), so
        probes leave one small object in all and need no right to delete. The calls run in
        a thread joined with the deadline, which also bounds a server that trickles bytes.
        """
        result: list[ProbeResult] = []
        worker = threading.Thread(
            target=lambda: result.append(self._probe(write)), daemon=True, name="remote-probe"
        )
        worker.start()
        worker.join(timeout)
        if result:
            return result[0]
        reason = self._line("probe", f"no answer within {timeout:g} s")
        return ProbeResult(False, False if write else None, reason)

    def _probe(self, write: bool) -> ProbeResult:
        name = self.location.folder("probe") + PROBE_OBJECT
        try:
            self._retrying("probe read", lambda: self._get(name), attempts=1)
        except RemoteError as e:
            return ProbeResult(False, False if write else None, str(e))
        if not write:
            return ProbeResult(True, None)
        try:
            data = b"provider-cache write probe\n"
            self._retrying("probe write", lambda: self._put_once(name, data), attempts=1)
        except RemoteError as e:
            return ProbeResult(True, False, str(e))
        return ProbeResult(True, True)

    def _get(self, name: str) -> bytes | None:
        client_error, _ = self._failures
        try:
            answer = self._client.get_object(Bucket=self.location.bucket, Key=name)
        except client_error as e:
            if _error_code(e) in _MISSING:
                return None
            raise
        return answer["Body"].read()

    def _put_once(self, name: str, data: bytes) -> bool:
        client_error, _ = self._failures
        try:
            self._client.put_object(
                Bucket=self.location.bucket,
                Key=name,
                Body=data,
                IfNoneMatch="*",
                ContentType="application/octet-stream",
            )
        except client_error as e:
            if _error_code(e) in _ALREADY_THERE or _status(e) == 412:
                return False
            raise
        return True

    def _retrying(self, what: str, call: Callable[[], T], attempts: int | None = None) -> T:
        """`call()`, tried again after a short pause while it fails transiently (5xx,
        throttling, a timeout): our own loop, so the worst case is attempts x timeout plus
        the pauses, where botocore's standard backoff may wait up to 2 s before a retry."""
        attempts = attempts or self.attempts
        attempt = 1
        while True:
            try:
                return call()
            except self._failures as e:
                error = self._error(what, e)
                if not error.transient or attempt >= attempts:
                    raise error from None
            time.sleep(RETRY_PAUSE * attempt)
            attempt += 1

    def _error(self, what: str, e: Exception) -> RemoteError:
        code, transient, reason = _describe(e, self.timeout, self.endpoint)
        return RemoteError(self._line(what, reason), code, transient)

    def _line(self, what: str, reason: str) -> str:
        return f"remote {self.location}: {what}: {reason}"


def _make_client(location: RemoteLocation, timeout: float, connections: int) -> Any:
    """An S3 client from the standard AWS configuration, with our bounds on every call."""
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
        from botocore.handlers import add_expect_header
    except ImportError:
        raise RemoteError(MISSING_BOTO3, "boto3", transient=False) from None
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 1},  # RemoteStore._retrying retries, with short pauses
        max_pool_connections=connections,
        user_agent_extra=f"provider-cache/{__version__}",
    )
    try:
        session = boto3.session.Session()
        if session.get_credentials() is None:
            config = config.merge(Config(signature_version=UNSIGNED))
        client = session.client("s3", config=config)
    except (BotoCoreError, ValueError) as e:
        # ProfileNotFound, a malformed config file, an invalid AWS_ENDPOINT_URL (whose
        # message would quote it): named by type only.
        line = f"remote {location}: unusable AWS configuration ({type(e).__name__})"
        raise RemoteError(line, "config", transient=False) from None
    # botocore sends `Expect: 100-continue` with every put and then waits up to a fixed
    # second for the interim answer: a round trip more per upload, and a second more than
    # our timeout on a server that hangs. Entries are small; send them straight away.
    client.meta.events.unregister("before-call.s3", add_expect_header)
    return client


def _failure_types() -> tuple[type[Exception], type[Exception]]:
    """botocore's two roots: an error answer (ClientError), and everything else."""
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError


def _error_code(e: Any) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: Any) -> int | None:
    return e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _describe(e: Exception, timeout: float, endpoint: str) -> tuple[str, bool, str]:
    """(code, transient, reason) of a boto3 failure, from its type and S3 code only.

    botocore's own messages are not used: they may quote URLs, and a server's Message
    (SignatureDoesNotMatch's carries the string to sign) is not ours to repeat.
    """
    from botocore import exceptions as bx

    if isinstance(e, bx.ClientError):
        code = _one_line(_error_code(e)) or "unknown"
        status = _status(e)
        transient = code in _TRANSIENT_CODES or (status or 0) >= 500 or status == 429
        # An answer without a body (HEAD, some gateways) has its status as its code.
        reason = f"HTTP {status}" if code == str(status) else f"{code} (HTTP {status})"
        return code, transient, reason
    if isinstance(e, bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return "timeout", True, f"no answer from {endpoint} within {timeout:g} s"
    if isinstance(e, bx.EndpointConnectionError | bx.ConnectionClosedError):
        return "connect", True, f"cannot connect to {endpoint} ({type(e).__name__})"
    if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
        return "credentials", False, f"AWS credentials incomplete ({type(e).__name__})"
    return "other", isinstance(e, bx.HTTPClientError), type(e).__name__


def _one_line(text: str) -> str:
    return "".join(c for c in text if c.isalnum() or c in "._-")[:_MAX_CODE_LENGTH]


def _host_of(url: str) -> str:
    """scheme://host:port of the endpoint, without anything a URL could carry besides."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"
