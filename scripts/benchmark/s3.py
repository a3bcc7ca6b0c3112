"""The remote tier's S3 server for the bench: moto's server mode on 127.0.0.1, one per run.

The server is the test suite's (tests/support/s3server.py: a moto subprocess on a free
port, stopped by PID), so the bench measures against the S3 API the remote tier's tests
use. Proxies and commands reach it only through the standard AWS variables this module
hands out (the planted test keys), never through the developer's AWS configuration.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmark.proxy import inherited_environment

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout, for tests.support

#: The prefix inside each section's bucket (cache_remote=s3://BUCKET/PREFIX).
PREFIX = "bench/cache"
#: The longest a push or pull may take: a bound, not a measure.
COMMAND_TIMEOUT = 1800


def missing() -> str | None:
    """Why the remote sections cannot run here (boto3 or moto's server missing), or None."""
    try:
        import boto3  # noqa: F401
        import flask  # noqa: F401  (moto's server mode)
        import moto  # noqa: F401
    except ImportError as e:
        return f"needs boto3 and moto[server] ({e.name} missing): pip install -e '.[test]'"
    return None


class S3:
    """One moto server for the run; a new bucket per section."""

    def __init__(self, work: Path) -> None:
        from tests.support.s3server import S3Server

        self.home = work / "aws-home"  # named config files that need not exist
        self.server = S3Server(work / "moto")

    def start(self) -> S3:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def bucket(self) -> str:
        """A new bucket; its cache_remote URL."""
        return f"s3://{self.server.new_bucket()}/{PREFIX}"

    def env(self) -> dict[str, str]:
        """The AWS variables that point a proxy or a command at this server."""
        from tests.support.s3server import aws_environment

        return aws_environment(self.server.endpoint, self.home)

    def command(self, *args: str, cwd: Path) -> float:
        """Run `provider-cache ARGS` against this server; its wall time in seconds."""
        command = [sys.executable, "-m", "provider_cache", *args]
        env = inherited_environment() | self.env()
        started = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=cwd, timeout=COMMAND_TIMEOUT
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"bench: provider-cache {' '.join(args)}: {done.stderr[-2000:]}")
        return seconds
