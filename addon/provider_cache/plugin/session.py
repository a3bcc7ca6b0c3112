"""One managed proxy for a pytest session (or an xdist worker), and the channel to it.

The session starts the proxy with a random control token in the proxy's environment only
(never on its command line, where `ps` shows it, and never in the tests' environment), and
points this process and its children at the proxy through the standard client variables.
Before each test it tells the proxy which test runs (and whether it is live); without the
token the proxy refuses such a message, so no test, child process or other client can
pose as another test.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from provider_cache.cli.proxyctl import ManagedProxy, ProxyError
from provider_cache.core.names import CONTROL_HEADER, CONTROL_TOKEN_ENV, ENDPOINT_TEST_URL

#: How long a message to the proxy may take; it answers from memory.
TELL_TIMEOUT = 5.0


class SessionError(Exception):
    """The proxy could not be started or reached; one line for the user."""


@dataclass
class ProxySession:
    cache_dir: Path
    mode: str
    options: list[str] = field(default_factory=list)
    scripts: list[Path] = field(default_factory=list)
    confdir: Path | None = None
    stats_file: Path | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    proxy: ManagedProxy | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _conn: http.client.HTTPConnection | None = None

    def start(self) -> None:
        options = list(self.options)
        for option in options:  # the CA the clients must trust is in the confdir in use
            name, _, value = option.partition("=")
            if name == "confdir":
                self.confdir = Path(value).expanduser().resolve()
        if self.stats_file is not None:
            options.append(f"cache_stats_file={self.stats_file}")
        log = Path(tempfile.mkstemp(prefix="provider-cache-pytest-", suffix=".log")[1])
        self.proxy = ManagedProxy(
            cache_dir=self.cache_dir,
            mode=self.mode,
            options=options,
            scripts=self.scripts,
            confdir=self.confdir,
            log_path=log,
            extra_env={CONTROL_TOKEN_ENV: self.token},
        )
        try:
            self.proxy.start()
        except (ProxyError, OSError) as e:
            raise SessionError(f"cannot start the proxy: {e} (log: {log})") from None
        for name, value in self.proxy.client_env().items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    @property
    def url(self) -> str:
        assert self.proxy is not None, "the session's proxy runs"
        return self.proxy.url

    def tell(self, test: str | None, live: bool = False) -> dict:
        """The test now running (None: none)."""
        return self._send(json.dumps({"test": test, "live": live}).encode())

    def ask(self) -> dict:
        """The test the proxy counts for, and its counters so far."""
        return self._send(None)

    def _send(self, body: bytes | None) -> dict:
        """One message on a kept-alive connection to the proxy (a new connection per test
        would cost each test a few milliseconds); a dropped connection is opened again."""
        headers = {CONTROL_HEADER: self.token}
        if body is not None:
            headers["content-type"] = "application/json"
        method = "GET" if body is None else "POST"
        for attempt in (1, 2):
            try:
                connection = self._connection()
                connection.request(method, ENDPOINT_TEST_URL, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                if answer.status != 200:
                    raise SessionError(f"the proxy refused the test's name: {answer.status}")
                return json.loads(data or b"{}")
            except (http.client.HTTPException, OSError) as e:
                self._close_connection()
                if attempt == 2:
                    raise SessionError(f"the proxy did not take the test's name: {e}") from None
            except ValueError as e:
                raise SessionError(f"the proxy's answer is not JSON: {e}") from None
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            assert self.proxy is not None, "the session's proxy runs"
            self._conn = http.client.HTTPConnection(
                "127.0.0.1", self.proxy.port, timeout=TELL_TIMEOUT
            )
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> int:
        """Stop the proxy (its stats file is flushed) and restore the client variables."""
        self._close_connection()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if self.proxy is None:
            return 0
        status = self.proxy.stop()
        if status == 0 and self.proxy.log_path is not None:
            self.proxy.log_path.unlink(missing_ok=True)
        return status
