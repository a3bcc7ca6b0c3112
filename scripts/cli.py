"""Argument parsing for every companion script, and the one-line failure contract (SPEC §7, §9).

Each script is a thin shim: `raise SystemExit(cli.run(main, parser(), argv))`.
Anticipated failures raise `Fail(message, code)`; `run` prints one line to stderr
and returns the code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

MODES = ("record", "replay", "refresh", "read-old-write-new")

# Exit codes shared by the scripts.
OK, BELOW_THRESHOLD, BAD_INPUT = 0, 1, 2


class Fail(Exception):
    def __init__(self, message: str, code: int = BAD_INPUT):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) rather than the usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise Fail(f"{self.prog}: {message} (see --help)", BAD_INPUT)


def hit_rate(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (or 0% and 100%): {text!r}")
    return value


def stats_parser() -> Parser:
    p = Parser(
        prog="cache_stats.py",
        description="Summarise provider-cache stats; gate CI on the hit rate.",
    )
    p.add_argument(
        "files",
        nargs="*",
        metavar="STATS_FILE",
        help="stats files (shards are summed); default recordings/stats.json",
    )
    p.add_argument("--url", help="a running proxy (http://127.0.0.1:8080) or its /stats URL")
    p.add_argument(
        "--min-hit-rate", type=hit_rate, metavar="F", help="exit 1 below this (0.95 or 95%%)"
    )
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    return p


def add_proxy_arguments(p: Parser) -> None:
    p.add_argument("--cache-dir", default="recordings", help="LMDB directory (default: recordings)")
    p.add_argument("--stats-file", help="stats file (default: <cache-dir>/stats.json)")
    p.add_argument("--confdir", help="mitmproxy confdir holding the CA (default: ~/.mitmproxy)")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra mitmproxy option, repeatable",
    )
    p.add_argument(
        "--script",
        dest="scripts",
        action="append",
        default=[],
        metavar="PATH",
        help="extra mitmproxy addon script, repeatable",
    )
    p.add_argument("--proxy-log", help="write mitmdump's output to this file")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def run_parser() -> Parser:
    p = Parser(
        prog="cache_run.py", description="Run a command behind a managed provider-cache proxy."
    )
    p.add_argument("--mode", choices=MODES, default="record")
    p.add_argument("--min-hit-rate", type=hit_rate, metavar="F", help="also gate on the hit rate")
    p.add_argument(
        "--format", choices=("text", "json", "markdown"), default="text", help="gate report format"
    )
    add_proxy_arguments(p)
    return p


def command_of(args: argparse.Namespace) -> list[str]:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise Fail("no command given: put it after --, e.g. -- pytest tests/", BAD_INPUT)
    return command


def run(main: Callable[[argparse.Namespace], int], parser: Parser, argv: list[str] | None) -> int:
    try:
        return main(parser.parse_args(argv))
    except Fail as e:
        print(str(e), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
