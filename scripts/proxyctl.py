"""A managed mitmdump with the addon: start on a free 127.0.0.1 port, wait, stop cleanly.

Used by cache_run.py and cache_rebuild.py, and by the end-to-end tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addon" / "cache.py"
ENDPOINT = "http://provider-cache.internal/stats"


class ProxyError(Exception):
    """The proxy could not be started; the message is one line for the user."""


def find_program(name: str) -> str:
    """mitmdump from this interpreter's environment, the project's .venv, or PATH."""
    for candidate in (Path(sys.executable).parent / name, ROOT / ".venv" / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ProxyError(f"{name} not found: run ./dev setup first")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagedProxy:
    cache_dir: Path
    mode: str = "record"
    options: list[str] = field(default_factory=list)  # extra "name=value" settings
    scripts: list[Path] = field(default_factory=list)  # extra addons, loaded after ours
    confdir: Path | None = None  # None: mitmproxy's default, ~/.mitmproxy
    log_path: Path | None = None
    program: str = "mitmdump"
    #: CI tuning measured by scripts/bench.py: no per-flow log line (flow_detail=0) and no
    #: assert statements (PYTHONOPTIMIZE=1) cut the proxy's CPU per hit by about 15%.
    quiet: bool = True
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return (self.confdir or Path("~/.mitmproxy").expanduser()) / "mitmproxy-ca-cert.pem"

    def command(self) -> list[str]:
        args = [find_program(self.program), "--listen-host", "127.0.0.1"]
        args += ["--listen-port", str(self.port), "-s", str(ADDON)]
        for script in self.scripts:
            args += ["-s", str(script)]
        defaults = {"cache_dir": self.cache_dir, "cache_mode": self.mode, "confdir": self.confdir}
        if self.quiet:
            defaults["flow_detail"] = 0
        given = {option.partition("=")[0] for option in self.options}
        settings = [f"{k}={v}" for k, v in defaults.items() if v is not None and k not in given]
        for setting in settings + self.options:  # mitmproxy refuses one option set twice
            args += ["--set", setting]
        return args

    def start(self, timeout: float = 30.0) -> ManagedProxy:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        if self.quiet:
            env.setdefault("PYTHONOPTIMIZE", "1")
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        finally:
            if self.log_path:
                log.close()
        self._wait_until_serving(timeout)
        return self

    def _wait_until_serving(self, timeout: float) -> None:
        """Ready means the addon's endpoint answers through the proxy: start-up checks passed."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": self.url}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProxyError(
                    f"{self.program} exited with {self.proc.returncode}: {self.last_error()}"
                )
            try:
                with opener.open(ENDPOINT, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ProxyError(f"{self.program} did not answer within {timeout:.0f}s")

    def last_error(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return "see its output"
        lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "provider-cache:" in ln or "rror" in ln]
        return (errors or lines or ["no output"])[0].strip()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT lets mitmproxy run the addon's done(): the stats file is flushed."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def client_env(self) -> dict[str, str]:
        """What clients need: the proxy for Python, curl and Node, and trust in its CA."""
        ca = str(self.ca_cert)
        no_proxy = ",".join(
            filter(None, [os.environ.get("NO_PROXY", ""), "localhost,127.0.0.1,::1"])
        )
        env = {
            name: self.url for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
        }
        env |= {"NO_PROXY": no_proxy, "no_proxy": no_proxy, "NODE_USE_ENV_PROXY": "1"}
        env |= dict.fromkeys(
            ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"), ca
        )
        env["PROVIDER_CACHE_PROXY"] = self.url
        return env

    def __enter__(self) -> ManagedProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
