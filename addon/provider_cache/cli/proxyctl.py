"""A managed mitmdump with the addon: start on a free 127.0.0.1 port, wait, stop cleanly.

Used by cache_run.py and cache_rebuild.py, and by the end-to-end tests.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provider_cache.core import hosts
from provider_cache.core.names import ENDPOINT_STATS_URL

#: The mitmproxy script of the package: the same wiring as the checkout's addon/cache.py.
ADDON = Path(__file__).resolve().parents[1] / "addon.py"
#: Client variables that point at a proxy, and those that make clients trust its CA (SPEC §2).
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
CA_FILE = "mitmproxy-ca-cert.pem"
CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
#: Loopback hosts, as NO_PROXY entries that curl, httpx, requests and Node read alike.
#: Not `[::1]`, which urllib and Node's undici would need for IPv6 loopback: it makes every
#: httpx client fail (InvalidURL); not a CIDR (`127.0.0.0/8`): only curl and requests read it.
LOOPBACK = ("localhost", "127.0.0.1", "::1")
#: Runs a mitmproxy tool from this interpreter when its console script is not beside it.
_LAUNCHER = (
    "import sys; from mitmproxy.tools import main; sys.exit(getattr(main, sys.argv.pop(1))())"
)


class ProxyError(Exception):
    """The proxy could not be started; the message is one line for the user."""


def find_program(name: str) -> list[str]:
    """The command that runs mitmproxy's `name` (mitmdump, mitmweb) of this environment.

    The console script beside this interpreter (a virtual environment's bin/), else the same
    tool through this interpreter: never another environment's mitmproxy found on PATH.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return [str(candidate)]
    return [sys.executable, "-c", _LAUNCHER, name]


def default_confdir() -> Path:
    return Path("~/.mitmproxy").expanduser()


def client_env(url: str, ca_cert: Path, cached: Sequence[str] = ()) -> dict[str, str]:
    """What clients need: the proxy for Python, curl and Node, and trust in its CA.

    `cached` is the proxy's `cache_hosts`: loopback hosts it names stay proxied.
    """
    ca = str(ca_cert)
    no_proxy = no_proxy_for(cached)
    env = dict.fromkeys(PROXY_VARS, url)
    env |= {"NO_PROXY": no_proxy, "no_proxy": no_proxy, "NODE_USE_ENV_PROXY": "1"}
    env |= dict.fromkeys(CA_VARS, ca)
    env["PROVIDER_CACHE_PROXY"] = url
    return env


def no_proxy_for(cached: Sequence[str]) -> str:
    """The caller's NO_PROXY plus loopback: a client's own local servers are no provider.

    A loopback host that `cached` names (a local model server, a test fake) is left out,
    and so is each of the caller's entries that would exempt it: in NO_PROXY, its requests
    would bypass the cache silently.
    """
    proxied = [host for host in LOOPBACK if _matches(cached, host)]
    caller = f"{os.environ.get('no_proxy', '')},{os.environ.get('NO_PROXY', '')}".split(",")
    entries = [e.strip() for e in caller if e.strip()]
    entries = [e for e in entries if not any(_exempts(e, host) for host in proxied)]
    entries += [host for host in LOOPBACK if host not in proxied]
    return ",".join(dict.fromkeys(entries))


def _matches(patterns: Sequence[str], host: str) -> bool:
    """Whether the proxy caches `host`: its own expansion and matcher. A bad pattern stops the
    proxy at start-up; here it only means no loopback host is cached."""
    try:
        return hosts.HostMatcher(hosts.expand(patterns))(host)
    except ValueError:
        return False


def _exempts(entry: str, host: str) -> bool:
    """Whether a NO_PROXY entry exempts the loopback `host` in some client: the name, with a
    port (`localhost:11434`, `[::1]:8000`) or a leading `.` / `*.`, or an IP network."""
    name = entry.lower()
    if name == "*":  # every host
        return True
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.removeprefix("*").lstrip(".")
    if name == host:
        return True
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False)
    except ValueError:  # a name, or `localhost`, which is no address
        return False


#: Linux's prctl(2) option that signals a child when its parent dies.
_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM (mitmdump then flushes its stats) when the command
    that started it dies, even of `kill -9`, so no proxy outlives a cancelled CI job."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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
    #: Variables for the proxy's environment only (the pytest plugin's control token).
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return (self.confdir or default_confdir()) / CA_FILE

    def command(self) -> list[str]:
        args = [*find_program(self.program), "--listen-host", "127.0.0.1"]
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
        env |= self.extra_env
        log = self.log_path.open("ab") if self.log_path else None
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=subprocess.DEVNULL if log is None else log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_stop_with_parent,
            )
        finally:
            if log is not None:
                log.close()
        self._wait_until_serving(timeout)
        return self

    def _wait_until_serving(self, timeout: float) -> None:
        """Ready means the addon's endpoint answers through the proxy: start-up checks passed."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": self.url}))
        proc = self.proc
        assert proc is not None, "start() launches the proxy before waiting for it"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ProxyError(
                    f"{self.program} exited with {proc.returncode}: {self.last_error()}"
                )
            try:
                with opener.open(ENDPOINT_STATS_URL, timeout=2) as response:
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
        return client_env(self.url, self.ca_cert, self.cache_hosts())

    def cache_hosts(self) -> list[str]:
        """The `cache_hosts` patterns given (each `--set` adds one); none: the built-in list."""
        settings = (option.partition("=") for option in self.options)
        return [value for name, _, value in settings if name == "cache_hosts"]

    def __enter__(self) -> ManagedProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
