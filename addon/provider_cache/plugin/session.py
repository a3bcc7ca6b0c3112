"""One managed proxy for a pytest session (or an xdist worker), and the channel to it.

The session starts the proxy with a random control token in the proxy's environment only
(never on its command line, where `ps` shows it, and never in the tests' environment), and
points this process and its children at the proxy through the standard client variables.
Before each test it tells the proxy which test runs (and whether it is live); without the
token the proxy refuses such a message, so no test, child process or other client can
pose as another test.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from provider_cache.cli.proxyctl import ManagedProxy, ProxyError, free_port
from provider_cache.core.names import CONTROL_PORT_ENV, CONTROL_TOKEN_ENV

#: How long a message to the proxy may take; it answers from memory.
TELL_TIMEOUT = 5.0
#: How long the proxy may take to listen on its control port once it serves.
CONNECT_TIMEOUT = 5.0


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
    control_port: int = field(default_factory=free_port)
    _sock: socket.socket | None = None
    _file: BinaryIO | None = None

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
            extra_env={CONTROL_TOKEN_ENV: self.token, CONTROL_PORT_ENV: str(self.control_port)},
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
        return self._send({"test": test, "live": live})

    def ask(self) -> dict:
        """The test the proxy counts for, and its counters so far."""
        return self._send({"ask": True})

    def _send(self, message: dict) -> dict:
        """One JSON line on the proxy's control port, answered with one line (a dropped
        connection is opened again once)."""
        line = json.dumps({"token": self.token, **message}).encode() + b"\n"
        for attempt in (1, 2):
            try:
                control = self._control()
                control.write(line)
                control.flush()
                data = control.readline()
                if not data:
                    raise ConnectionError("the proxy closed the control connection")
            except OSError as e:
                self._close_control()
                if attempt == 2:
                    raise SessionError(f"the proxy did not take the test's name: {e}") from None
                continue
            try:
                answer = json.loads(data)
            except ValueError as e:
                raise SessionError(f"the proxy's answer is not JSON: {e}") from None
            if "error" in answer:
                raise SessionError(f"the proxy refused the test's name: {answer['error']}")
            return answer
        raise AssertionError("unreachable")

    def _control(self) -> BinaryIO:
        """The connection to the control port, once the proxy listens on it."""
        if self._file is None:
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while True:
                try:
                    sock = socket.create_connection(
                        ("127.0.0.1", self.control_port), timeout=TELL_TIMEOUT
                    )
                    break
                except ConnectionRefusedError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._file = sock, cast(BinaryIO, sock.makefile("rwb"))
        return self._file

    def _close_control(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stop(self) -> int:
        """Stop the proxy (its stats file is flushed) and restore the client variables."""
        self._close_control()
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
