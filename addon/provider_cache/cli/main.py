"""The `provider-cache` command: one subcommand for everything a user does (SPEC §1, §7).

    provider-cache proxy [MITMDUMP ARGS]   the caching proxy on 127.0.0.1:8080
    provider-cache web   [MITMWEB ARGS]    the same under mitmweb
    provider-cache run | stats | rebuild | recordings …   the companion scripts
    provider-cache env                     export lines for clients of a running proxy
    provider-cache addon-path              the script for `mitmdump -s`

The scripts of §7 (`python scripts/NAME.py`) are the same subcommands under their old
names (`script`). Exit codes are theirs; a failure is one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provider_cache import __version__
from provider_cache.cli import args, proxyctl
from provider_cache.core.names import ENDPOINT_STATS_URL

DEFAULT_PROXY = "http://127.0.0.1:8080"
#: The mitmproxy tool behind `proxy` and `web`.
TOOLS = {"proxy": "mitmdump", "web": "mitmweb"}


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int] | str  # a function, or "module:function"
    script: str | None = None  # its name under scripts/, if it has one

    def run(self, ns: argparse.Namespace) -> int:
        """Imported only when run: `stats` needs nothing but the standard library (a CI step
        may run scripts/cache_stats.py with any python3), `recordings` needs LMDB."""
        if isinstance(self.main, str):
            module, _, function = self.main.partition(":")
            main: Callable[[argparse.Namespace], int] = getattr(
                importlib.import_module(f"provider_cache.cli.{module}"), function
            )
            return main(ns)
        return self.main(ns)


def _env_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proxy", default=DEFAULT_PROXY, help="the proxy's URL (default: %(default)s)")
    p.add_argument("--confdir", help="mitmproxy confdir holding the CA (default: ~/.mitmproxy)")


def _env(ns: argparse.Namespace) -> int:
    """`eval "$(provider-cache env)"`: the variables of SPEC §2 for a running proxy."""
    ca = Path(ns.confdir).expanduser() if ns.confdir else proxyctl.default_confdir()
    ca = ca.resolve() / proxyctl.CA_FILE
    if not ca.is_file():
        raise args.Fail(
            f"no mitmproxy CA at {ca}: start the proxy once (provider-cache proxy) "
            "or give its --confdir"
        )
    if not _answers(ns.proxy):
        print(
            f"provider-cache: warning: no provider-cache proxy answers at {ns.proxy}",
            file=sys.stderr,
        )
    for name, value in proxyctl.client_env(ns.proxy, ca).items():
        print(f"export {name}={shlex.quote(value)}")
    return args.OK


def _answers(proxy: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        with opener.open(ENDPOINT_STATS_URL, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _addon_path(ns: argparse.Namespace) -> int:
    print(proxyctl.ADDON)
    return args.OK


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


COMMANDS: dict[str, Command] = {
    "run": Command(
        "run a command behind a managed proxy", args.add_run_arguments, "runner:main", "cache_run"
    ),
    "stats": Command(
        "summarise stats; gate CI on the hit rate",
        args.add_stats_arguments,
        "gate:main",
        "cache_stats",
    ),
    "rebuild": Command(
        "replay; if short, re-record and verify, with backoff",
        args.add_rebuild_arguments,
        "rebuild:main",
        "cache_rebuild",
    ),
    "recordings": Command(
        "inspect and manage a store", args.add_recordings_arguments, "admin:main", "recordings"
    ),
    "env": Command(
        "print export lines that point clients at a running proxy", _env_arguments, _env
    ),
    "addon-path": Command(
        "print the mitmproxy script, for mitmdump -s", _no_arguments, _addon_path
    ),
}


def parser() -> args.Parser:
    top = args.Parser(
        prog="provider-cache",
        description="Record and replay LLM provider traffic through mitmproxy.",
        epilog="proxy and web pass every further argument to mitmdump / mitmweb. "
        "Each subcommand has its own --help.",
    )
    top.add_argument("--version", action="version", version=f"provider-cache {__version__}")
    sub = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=args.Parser
    )
    for name, tool in TOOLS.items():
        sub.add_parser(name, help=f"start {tool} with the cache on 127.0.0.1 (args go to {tool})")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.arguments(p)
        p.set_defaults(handler=command.run)
    return top


def launch(tool: str, extra: list[str]) -> int:
    """Become mitmdump or mitmweb with the cache loaded (a PID that stops like mitmdump's)."""
    argv = [*proxyctl.find_program(tool), "--listen-host", "127.0.0.1", "-s", str(proxyctl.ADDON)]
    argv += extra
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        raise args.Fail(f"cannot start {tool}: {e.strerror}") from None
    return args.OK  # not reached


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in TOOLS:
        return args.run(lambda _: launch(TOOLS[argv[0]], argv[1:]), args.Parser(), [])
    return args.run(lambda ns: ns.handler(ns), parser(), argv)


def script_parser(name: str) -> args.Parser:
    """The parser of a companion script of §7 (`cache_stats`, …), under its own name."""
    [command] = [c for c in COMMANDS.values() if c.script == name]
    p = args.Parser(prog=f"{name}.py", description=command.help)
    command.arguments(p)
    return p


def script(name: str, argv: list[str]) -> int:
    """A subcommand as the script of §7 that it was: `python scripts/cache_stats.py …`."""
    [command] = [c for c in COMMANDS.values() if c.script == name]
    return args.run(command.run, script_parser(name), argv)
