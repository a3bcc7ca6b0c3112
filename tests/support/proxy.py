"""Real mitmdump processes for end-to-end tests: the product's ManagedProxy, made hermetic.

Each proxy gets its own confdir (never ~/.mitmproxy), a log file, and a test-only
addon that resolves provider host names to the fake provider.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

from provider_cache.cli.proxyctl import ManagedProxy, ProxyError, free_port

RESOLVE_ADDON = Path(__file__).with_name("resolve.py")
ROOT_DIR = Path(__file__).resolve().parents[2]

__all__ = ["Mitmdump", "free_port"]


@dataclass
class WrappedProxy(ManagedProxy):
    """A managed proxy started through a wrapper command that execs it (same PID): e.g.
    `unshare` with a read-only bind mount or a tiny tmpfs over the cache directory."""

    wrapper: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return [*self.wrapper, *super().command()]


@dataclass
class Mitmdump:
    workdir: Path
    cache_dir: Path
    options: dict[str, str | list[str]] = field(default_factory=dict)
    resolve: dict[str, int] = field(default_factory=dict)
    upstream_ca: Path | None = None
    program: str = "mitmdump"
    wrapper: list[str] = field(default_factory=list)
    managed: ManagedProxy | None = None

    @property
    def port(self) -> int:
        return self.managed.port

    @property
    def url(self) -> str:
        return self.managed.url

    @property
    def confdir(self) -> Path:
        return self.workdir / "mitmproxy-conf"

    @property
    def ca_cert(self) -> Path:
        return self.managed.ca_cert

    @property
    def log_path(self) -> Path:
        return self.managed.log_path

    def start(self) -> Mitmdump:
        options = dict(self.options)
        mode = str(options.pop("cache_mode", "record"))
        cache_dir = Path(str(options.pop("cache_dir", self.cache_dir)))
        if self.upstream_ca:
            options["ssl_verify_upstream_trusted_ca"] = str(self.upstream_ca)
        if self.resolve:
            options["test_resolve"] = [f"{h}=127.0.0.1:{p}" for h, p in self.resolve.items()]
        settings = [
            f"{name}={v}"
            for name, value in options.items()
            for v in (value if isinstance(value, list) else [value])
        ]
        index = len(list(self.workdir.glob(f"{self.program}-*.log")))
        self.managed = WrappedProxy(
            wrapper=self.wrapper,
            cache_dir=cache_dir,
            mode=mode,
            options=settings,
            scripts=[RESOLVE_ADDON] if self.resolve else [],
            confdir=self.confdir,
            log_path=self.workdir / f"{self.program}-{index}.log",
            program=self.program,
            quiet=False,  # tests read the per-flow log lines
        )
        try:
            self.managed.start(timeout=30)
        except ProxyError as e:
            raise RuntimeError(f"mitmdump exited with 1: {e}\n{self.log()}") from None
        return self

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.managed is None or self.managed.proc is None:
            return 0
        if sig != signal.SIGINT and self.managed.proc.poll() is None:
            self.managed.proc.send_signal(sig)
        return self.managed.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client_env(self) -> dict[str, str]:
        """The README's variables; NO_PROXY emptied so even localhost goes through the proxy."""
        return self.managed.client_env() | {"NO_PROXY": "", "no_proxy": ""}

    def __enter__(self) -> Mitmdump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
