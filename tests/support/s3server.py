"""A real S3 API server on 127.0.0.1 for the remote tier's tests (SPEC §11), and endpoints
that misbehave: one that accepts connections and never answers.

The server is moto's server mode in its own process (`python -m moto.server -p 0`): it
binds a free port itself and names it on its first lines, so there is no port race; it
holds no state of the test process; and it is stopped by PID. Tests reach it with boto3
over HTTP exactly as users reach S3, R2 or MinIO, through the standard AWS variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

#: Planted AWS credentials: the secret must appear in no message, object, log or stats file.
AWS_ACCESS_KEY_ID = "AKIAPLANTEDACCESSKEY16"
AWS_SECRET_ACCESS_KEY = "PLANTEDawsSecretAccessKey000000000000017"
REGION = "us-east-1"
_RUNNING = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 60.0


def aws_environment(endpoint: str, home: Path) -> dict[str, str]:
    """The standard AWS variables pointing at `endpoint`, with the planted credentials.

    Config and credentials files are named under `home` (and need not exist), so the
    developer's ~/.aws is never read; instance metadata is off, so a missing credential
    never sends boto3 to 169.254.169.254.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def without_aws(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without any AWS_* variable (profiles, tokens, endpoints of the developer)."""
    return {k: v for k, v in environ.items() if not k.upper().startswith("AWS_")}


class S3Server:
    """moto's S3 server as a subprocess; `endpoint` once started.

    With `auth=True` it checks signatures and IAM policies as S3 does (403 AccessDenied,
    SignatureDoesNotMatch, InvalidAccessKeyId): `admin` holds the keys of a user allowed
    everything, and `create_user` makes users allowed less, such as a read-only CI job.
    """

    def __init__(self, workdir: Path, *, auth: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.auth = auth
        self.admin: tuple[str, str] = (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)

    def start(self) -> Self:
        env = without_aws(dict(os.environ))
        if self.auth:
            # moto lets this many requests through unauthenticated: those that make the admin.
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(len(_ADMIN_SETUP))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.endpoint = f"http://127.0.0.1:{self._wait_for_port()}"
        if self.auth:
            self.admin = self._create_admin()
        return self

    def _create_admin(self) -> tuple[str, str]:
        iam = self.client("iam")
        for call in _ADMIN_SETUP:
            answer = call(iam)
        return answer["AccessKey"]["AccessKeyId"], answer["AccessKey"]["SecretAccessKey"]

    def create_user(self, name: str, actions: list[str]) -> tuple[str, str]:
        """An IAM user allowed only `actions` (e.g. ["s3:GetObject", "s3:ListBucket"])."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=_policy(actions))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def _wait_for_port(self) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = _RUNNING.search(self.log_path.read_bytes())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, service: str = "s3") -> Any:
        """A plain boto3 client on this server (as the admin), to arrange and inspect."""
        import boto3

        key_id, secret = self.admin
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def new_bucket(self) -> str:
        """A bucket no other test uses, so tests share one server and nothing else."""
        name = f"pc-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _policy(actions: list[str]) -> str:
    statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


_ADMIN_SETUP = (
    lambda iam: iam.create_user(UserName="admin"),
    lambda iam: iam.put_user_policy(
        UserName="admin", PolicyName="all", PolicyDocument=_policy(["*"])
    ),
    lambda iam: iam.create_access_key(UserName="admin"),
)


@dataclass(frozen=True)
class Bucket:
    """A test's own bucket on a server, and the cache_remote URL of a prefix in it."""

    server: S3Server
    name: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}/team/cache"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT that accepts connections, reads requests and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True, name="silent-endpoint")
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


@dataclass
class FailingEndpoint:
    """An endpoint whose every answer is one S3 error; `requests` counts what it was sent."""

    url: str
    requests: int = 0


@contextlib.contextmanager
def failing_endpoint(status: int, code: str) -> Iterator[FailingEndpoint]:
    """http://127.0.0.1:PORT answering every request with `status` and S3's error body."""
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>failing on purpose</Message></Error>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def _fail(self) -> None:
            endpoint.requests += 1
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(status)
            self.send_header("content-type", "application/xml")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _fail

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint = FailingEndpoint(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="failing-endpoint")
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


def closed_endpoint() -> str:
    """http://127.0.0.1:PORT where nothing listens: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
