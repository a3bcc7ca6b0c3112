"""Fixtures of the remote tier (SPEC §11): one real S3 server per session, a fresh bucket per test.

Registered for the whole suite in tests/conftest.py (`pytest_plugins`), so that storage, e2e
and reliability tests share them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.s3server import Bucket, S3Server, aws_environment


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Started once (about a second), shared by buckets: no test sees another's objects."""
    with S3Server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A second server that checks signatures and IAM policies, as S3 does."""
    with S3Server(tmp_path_factory.mktemp("moto-auth"), auth=True) as server:
        yield server


@pytest.fixture
def aws_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], None]:
    """Point this process's standard AWS configuration at an endpoint (planted keys)."""

    def point_at(endpoint: str) -> None:
        for name in [n for n in os.environ if n.upper().startswith("AWS_")]:
            monkeypatch.delenv(name)
        for name, value in aws_environment(endpoint, tmp_path / "home").items():
            monkeypatch.setenv(name, value)

    return point_at


@pytest.fixture
def s3(s3_server: S3Server, aws_endpoint: Callable[[str], None]) -> Bucket:
    """A new bucket on the real S3 server, and the AWS configuration pointing at it."""
    aws_endpoint(s3_server.endpoint)
    return Bucket(s3_server, s3_server.new_bucket())


@pytest.fixture
def s3_auth(
    s3_auth_server: S3Server, aws_endpoint: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> Bucket:
    """A new bucket on the checking server; this process holds the admin's keys until a test
    sets a user's (tests.support.s3server.S3Server.create_user)."""
    aws_endpoint(s3_auth_server.endpoint)
    key_id, secret = s3_auth_server.admin
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return Bucket(s3_auth_server, s3_auth_server.new_bucket())
