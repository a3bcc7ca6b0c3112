"""Start and stop a real mitmdump with the addon, hermetically, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RESOLVE_ADDON = Path(__file__).with_name("resolve.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Ready means the addon's endpoint answers through the proxy (start-up checks passed)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if client.get("http://provider-cache.internal/stats").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"mitmdump did not serve on {port} within {timeout}s:\n{log.read_text()}")


@dataclass
class Mitmdump:
    """One mitmdump process on a free port with its own confdir and cache_dir."""

    workdir: Path
    cache_dir: Path
    options: dict[str, str | list[str]] = field(default_factory=dict)
    resolve: dict[str, int] = field(default_factory=dict)
    upstream_ca: Path | None = None
    program: str = "mitmdump"
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def confdir(self) -> Path:
        return self.workdir / "mitmproxy-conf"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.program}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        opts: dict[str, str | list[str]] = {
            "confdir": str(self.confdir),
            "cache_dir": str(self.cache_dir),
            **self.options,
        }
        if self.upstream_ca:
            opts["ssl_verify_upstream_trusted_ca"] = str(self.upstream_ca)
        args = [
            str(BIN / self.program),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
        ]
        args += ["-s", str(ROOT / "addon" / "cache.py")]
        if self.resolve:
            args += ["-s", str(RESOLVE_ADDON)]
            opts["test_resolve"] = [f"{h}=127.0.0.1:{p}" for h, p in self.resolve.items()]
        for name, value in opts.items():
            for v in value if isinstance(value, list) else [value]:
                args += ["--set", f"{name}={v}"]
        return args

    def start(self) -> Mitmdump:
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        wait_until_serving(self.port, self.proc, self.log_path)
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Stop our own process by PID: SIGINT lets the addon's done() run."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client_env(self) -> dict[str, str]:
        """What the README tells users to set: proxy plus the CA for every client."""
        ca = str(self.ca_cert)
        return {
            "HTTPS_PROXY": self.url,
            "HTTP_PROXY": self.url,
            "https_proxy": self.url,
            "http_proxy": self.url,
            "NO_PROXY": "",
            "no_proxy": "",
            "SSL_CERT_FILE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "CURL_CA_BUNDLE": ca,
            "NODE_EXTRA_CA_CERTS": ca,
        }

    def __enter__(self) -> Mitmdump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
