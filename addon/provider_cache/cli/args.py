"""Argument parsing for every companion script, and the one-line failure contract (SPEC §7, §9).

Each script is a thin shim: `raise SystemExit(cli.run(main, parser(), argv))`.
Anticipated failures raise `Fail(message, code)`; `run` prints one line to stderr
and returns the code, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from provider_cache.core.names import DEFAULT_MODE, MODES
from provider_cache.storage.cachedir import DEFAULT_CACHE_DIR, STATS_FILE

if TYPE_CHECKING:
    from provider_cache.core.remoteobject import RemoteLocation

# Exit codes shared by the scripts.
OK, BELOW_THRESHOLD, BAD_INPUT = 0, 1, 2


class Fail(Exception):
    def __init__(self, message: str, code: int = BAD_INPUT):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) rather than the usage block."""

    def error(self, message: str) -> NoReturn:
        raise Fail(f"{self.prog}: {message} (see --help)", BAD_INPUT)


def hit_rate(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (or 0% and 100%): {text!r}")
    return value


#: The units of an age: `30d`, `12h`, `90m`, `45s`, `2w`.
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def age(text: str) -> float:
    """An age in seconds from `30d`, `12h`, `90m`, `45s` or `2w`."""
    number, unit = text[:-1], text[-1:].lower()
    try:
        value = float(number) * AGE_UNITS[unit]
    except (KeyError, ValueError):
        units = ", ".join(AGE_UNITS)
        raise argparse.ArgumentTypeError(
            f"not an age: {text!r} (a number and a unit, one of {units}: 30d, 12h)"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (must be 0 or more)")
    return value


def _at_least(text: str, minimum: float, kind: type[int] | type[float], what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum:g} or more: {text!r}")
    return value


def seconds(text: str) -> float:
    """A delay: a finite number of seconds, 0 or more."""
    return _at_least(text, 0, float, "a number of seconds")


def growth(text: str) -> float:
    """A backoff factor: 1 (the same delay each time) or more."""
    return _at_least(text, 1, float, "a number")


def count(text: str) -> int:
    return int(_at_least(text, 0, int, "a whole number"))


def attempts(text: str) -> int:
    return int(_at_least(text, 1, int, "a whole number"))


#: A run without lookups has nothing stale, but a client that bypassed the proxy made none.
MIN_LOOKUPS_HELP = (
    "exit 1 when the run made fewer provider lookups: a client that bypassed the proxy must"
    " not pass as nothing stale (default 0: no minimum)"
)


def add_min_lookups(p: argparse.ArgumentParser, help: str = MIN_LOOKUPS_HELP) -> None:
    p.add_argument("--min-lookups", type=count, default=0, metavar="N", help=help)


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "files",
        nargs="*",
        metavar="STATS_FILE",
        help=f"stats files (shards are summed); default {DEFAULT_CACHE_DIR}/{STATS_FILE}",
    )
    p.add_argument("--url", help="a running proxy (http://127.0.0.1:8080) or its /stats URL")
    p.add_argument(
        "--min-hit-rate", type=hit_rate, metavar="F", help="exit 1 below this (0.95 or 95%%)"
    )
    add_min_lookups(p)
    p.add_argument(
        "--fail-unused",
        action="store_true",
        help="exit 1 when the store holds entries no request of the run used",
    )
    p.add_argument(
        "--max-age",
        type=age,
        metavar="AGE",
        help="exit 1 when the run used a recording older than AGE (30d, 12h)",
    )
    p.add_argument(
        "--warn-age", type=age, metavar="AGE", help="only warn about recordings older than AGE"
    )
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")


def add_cache_dir(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=f"{help} (default: %(default)s)")


def add_proxy_arguments(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    """`outputs`: the one proxy's stats file and log can be named (not so for rebuild's runs)."""
    add_cache_dir(p, "LMDB directory")
    if outputs:
        p.add_argument("--stats-file", help=f"stats file (default: <cache-dir>/{STATS_FILE})")
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
    if outputs:
        p.add_argument("--proxy-log", help="write mitmdump's output to this file")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE)
    p.add_argument("--min-hit-rate", type=hit_rate, metavar="F", help="also gate on the hit rate")
    add_min_lookups(p)
    p.add_argument(
        "--format", choices=("text", "json", "markdown"), default="text", help="gate report format"
    )
    add_proxy_arguments(p)


def command_of(args: argparse.Namespace) -> list[str]:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise Fail("no command given: put it after --, e.g. -- pytest tests/", BAD_INPUT)
    return command


class Terminated(Exception):
    """SIGTERM (a cancelled CI job) or SIGHUP (its terminal closed): unwound like Ctrl-C, so
    managed proxies and commands are stopped."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


#: A reader that stopped reading (`… | head`): the status of a process killed by SIGPIPE.
BROKEN_PIPE = 128 + signal.SIGPIPE


def run(main: Callable[[argparse.Namespace], int], parser: Parser, argv: list[str] | None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:  # not under nohup
        signal.signal(signal.SIGHUP, _terminate)
    try:
        code = _run(main, parser, argv)
        if sys.stdout is not None:  # None when started with stdout closed
            sys.stdout.flush()  # here, not at exit: a closed pipe is then still ours to handle
        return code
    except BrokenPipeError:
        # As the Python docs advise: point stdout at devnull, so that the flush at exit
        # does not fail again ("Exception ignored … BrokenPipeError").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE


def _run(main: Callable[[argparse.Namespace], int], parser: Parser, argv: list[str] | None) -> int:
    try:
        return main(parser.parse_args(argv))
    except Fail as e:
        print(str(e), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated as e:
        print("terminated" if e.signum == signal.SIGTERM else f"terminated by {e}", file=sys.stderr)
        return 128 + e.signum


def add_recordings_arguments(p: argparse.ArgumentParser) -> None:
    add_cache_dir(p, "the store")
    sub = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    ls = sub.add_parser("ls", help="list entries")
    ls.add_argument("--host", help="host glob, e.g. api.openai.com or *.azure.com")
    ls.add_argument("--path", help="path glob, e.g. /v1/chat/*")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="show one entry: redacted request, response, chunks")
    show.add_argument("key", help="a key or a unique prefix of one (6+ characters)")
    rm = sub.add_parser("rm", help="delete entries")
    rm.add_argument("keys", nargs="+", metavar="KEY")
    prune = sub.add_parser(
        "prune", help="delete entries not hit in the last N counted runs, or older than AGE"
    )
    prune.add_argument(
        "--unused-runs",
        type=int,
        metavar="N",
        help="entries present in each of the last N counted runs (runs that made lookups and"
        " ended cleanly) and hit in none",
    )
    prune.add_argument(
        "--older-than",
        type=age,
        metavar="AGE",
        help="entries recorded longer ago than AGE (30d, 12h); with --unused-runs: entries"
        " that are both",
    )
    prune.add_argument(
        "--removed-to",
        metavar="PATH",
        help="where the removed entries are kept for `import` (default:"
        " <cache-dir>/pruned-<time>.json)",
    )
    prune.add_argument("--dry-run", action="store_true", help="only list what would go")
    export = sub.add_parser("export", help="diffable text (default) or a .mitm flow file")
    export.add_argument("-o", "--output", help="file to write (default: stdout, text only)")
    export.add_argument("--format", choices=("text", "mitm"), default="text")
    imp = sub.add_parser("import", help="import a text export or a mitmproxy flow file")
    imp.add_argument("file")
    merge = sub.add_parser(
        "merge",
        help="merge another cache directory (newer entry wins; a key with slots: extra slots)",
    )
    merge.add_argument("other", metavar="OTHER_DIR")
    merge.add_argument("--dry-run", action="store_true")
    merge.add_argument(
        "--slots",
        action="store_true",
        help="keep divergent answers as slots of their key (cache_sequence), for every key",
    )
    sub.add_parser("verify", help="check that every entry decodes; exit 1 if one does not")
    misses = sub.add_parser("misses", help="the missed requests of a run, with what differs")
    misses.add_argument("stats_file", nargs="?", help=f"default: <cache-dir>/{STATS_FILE}")
    add_remote_actions(sub)


# -- the remote tier (SPEC §11): cli/remote.py -------------------------------------------------

#: Parallel transfers: a small default, since R2 throttles many connections.
DEFAULT_JOBS = 4
MAX_JOBS = 64
#: gc leaves any object (and manifest) uploaded more recently than this.
DEFAULT_GRACE = "7d"


#: remoteobject.URL_FORM, kept here too: the gate (cache_stats) must import no msgpack.
URL_FORM = "s3://BUCKET/PREFIX"


def remote_location(text: str) -> RemoteLocation:
    """`s3://BUCKET/PREFIX`; the error never repeats the value (it may hold a credential)."""
    from provider_cache.core.remoteobject import parse_location  # needs msgpack

    try:
        return parse_location(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def jobs(text: str) -> int:
    value = int(_at_least(text, 1, int, "a whole number"))
    if value > MAX_JOBS:
        raise argparse.ArgumentTypeError(f"at most {MAX_JOBS}: {text!r}")
    return value


def add_remote(p: argparse.ArgumentParser, *, required: bool = True, help: str = "") -> None:
    p.add_argument(
        "--remote",
        type=remote_location,
        required=required,
        metavar=URL_FORM,
        help=help
        or "the remote tier; endpoint and credentials from the standard AWS"
        " configuration (AWS_ENDPOINT_URL, AWS_PROFILE, AWS_* variables)",
    )


def add_transfer(p: argparse.ArgumentParser, what: str) -> None:
    add_remote(p)
    p.add_argument("--dry-run", action="store_true", help=f"only list what {what}")
    p.add_argument(
        "--jobs",
        type=jobs,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"transfers at once, 1-{MAX_JOBS} (default %(default)s: R2 throttles many)",
    )


def add_remote_actions(sub: argparse._SubParsersAction) -> None:
    push = sub.add_parser("push", help="upload the entries the remote lacks (write-once)")
    add_transfer(push, "would be uploaded")
    pull = sub.add_parser("pull", help="download the objects this store lacks, each checked")
    add_transfer(pull, "would be downloaded")
    sync = sub.add_parser("sync", help="pull, then push")
    add_transfer(sync, "would move")
    rm = sub.add_parser(
        "remote-rm", help="delete remote objects, to replace a bad entry (needs delete rights)"
    )
    add_remote(rm)
    rm.add_argument("keys", nargs="+", metavar="KEY", help="a key or a unique prefix (6+)")
    manifest = sub.add_parser(
        "manifest", help="publish the keys the last run used, for gc (after a gate passed)"
    )
    add_remote(manifest)
    manifest.add_argument("--dry-run", action="store_true", help="only say what it would name")
    gc = sub.add_parser(
        "gc", help="delete remote objects none of the last N manifests names, past a grace period"
    )
    add_transfer(gc, "would be deleted")
    gc.add_argument(
        "--keep", type=attempts, required=True, metavar="N", help="manifests that protect, 1+"
    )
    gc.add_argument(
        "--grace",
        type=age,
        default=DEFAULT_GRACE,
        metavar="AGE",
        help="never delete what was uploaded less than AGE ago (default %(default)s)",
    )


def add_rebuild_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-hit-rate", type=hit_rate, required=True, metavar="F")
    p.add_argument("--full", action="store_true", help="rebuild from scratch into a fresh store")
    p.add_argument("--force", action="store_true", help="ignore the backoff window")
    add_min_lookups(
        p, "a replay run (check or verify) with fewer provider lookups falls short (default 0)"
    )
    p.add_argument(
        "--base-delay", type=seconds, default=30.0, metavar="S", help="first delay (default 30)"
    )
    p.add_argument(
        "--factor", type=growth, default=2.0, metavar="X", help="delay growth, 1+ (default 2)"
    )
    p.add_argument(
        "--max-delay", type=seconds, default=900.0, metavar="S", help="cap (default 900)"
    )
    p.add_argument("--max-attempts", type=attempts, default=3, metavar="N", help="1+ (default 3)")
    add_remote(
        p,
        required=False,
        help="after a verified run, push the entries it used and publish their manifest"
        " (never after an unverified one)",
    )
    # Each run's stats and log go to the rebuild's work directory, named when it fails.
    add_proxy_arguments(p, outputs=False)
