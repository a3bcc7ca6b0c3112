"""A mitmdump process under measurement: launched on a free port, read through /proc.

Not scripts/proxyctl.ManagedProxy: that one always loads the cache addon and waits on
its endpoint, while the bench also runs mitmdump without it (the ceiling, server replay,
passthrough) and times start-up as launch -> first answered request.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provider_cache.cli.proxyctl import find_program, free_port

ROOT = Path(__file__).resolve().parents[2]

ADDON = ROOT / "addon" / "cache.py"
REFERENCE = ROOT / "scripts" / "benchmark" / "addons.py"
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Proxy:
    """`args` come after the settings every variant shares (see `command`)."""

    name: str
    args: list[str]
    confdir: Path
    log_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    launched_at: float = 0.0
    extra: dict = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # on top of ours, e.g. PYTHONOPTIMIZE

    def command(self) -> list[str]:
        return [
            *find_program("mitmdump"),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--set",
            f"confdir={self.confdir}",
            # Every variant answers hits without connecting upstream, and never checks the
            # upstream's throwaway certificate on the record and passthrough paths.
            "--set",
            "connection_strategy=lazy",
            "--set",
            "ssl_insecure=true",
            *self.args,
        ]

    @property
    def log_path(self) -> Path:
        return self.log_dir / (re.sub(r"[^\w.=-]+", "_", self.name) + ".log")

    def launch(self) -> Proxy:
        self.port = free_port()
        log = self.log_path.open("ab")
        env = inherited_environment()
        env |= self.env
        with log:
            self.launched_at = time.perf_counter()
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        """utime + stime of the whole process (all threads), in seconds."""
        assert self.proc is not None, "launch() first"
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK

    def rss(self) -> int:
        """Resident set size in bytes."""
        assert self.proc is not None, "launch() first"
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def inherited_environment() -> dict[str, str]:
    """This process's environment without proxy settings, and without any AWS_* variable:
    a bench process reaches only the S3 server the bench started (its `env` says where)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.upper().startswith("AWS_")
    }


BARE_CACHE = ROOT / "scripts" / "benchmark" / "bare_cache.py"


def cache(
    name: str, cache_dir: Path, mode: str, *settings: str, script: Path = ADDON, **kw: Any
) -> Proxy:
    args = ["-s", str(script), "--set", f"cache_dir={cache_dir}", "--set", f"cache_mode={mode}"]
    for setting in settings:
        args += ["--set", setting]
    return Proxy(name, args, **kw)


def reference(name: str, role: str, *settings: str, **kw: Any) -> Proxy:
    args = ["-s", str(REFERENCE), "--set", f"bench_role={role}"]
    for setting in settings:
        args += ["--set", setting]
    return Proxy(name, args, **kw)


def server_replay(name: str, flows: Path, refresh: bool, **kw: Any) -> Proxy:
    args = ["--server-replay", str(flows), "--set", "server_replay_reuse=true"]
    args += ["--set", f"server_replay_refresh={str(refresh).lower()}"]
    return Proxy(name, args, **kw)


def plain(name: str, *settings: str, **kw: Any) -> Proxy:
    args = []
    for setting in settings:
        args += ["--set", setting]
    return Proxy(name, args, **kw)
