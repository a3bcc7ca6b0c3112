"""`provider-cache run` (scripts/cache_run.py): run a command behind a managed proxy, then
optionally gate on its stats."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from provider_cache.cli import gate
from provider_cache.cli.args import OK, Fail, command_of
from provider_cache.cli.job import Job, signal_of
from provider_cache.cli.proxyctl import ManagedProxy, ProxyError
from provider_cache.storage.cachedir import STATS_FILE
from provider_cache.storage.usage import mark_interrupted

#: A command killed by one of these (as itself, or as a shell's 128 + N) was interrupted.
INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP)


def proxy_for(args: argparse.Namespace, mode: str, cache_dir: Path | None = None) -> ManagedProxy:
    options = list(args.options)
    if args.stats_file:
        options.append(f"cache_stats_file={Path(args.stats_file).resolve()}")
    if args.proxy_log:
        log = Path(args.proxy_log)
        try:  # before anything starts: the proxy appends to it
            log.open("ab").close()
        except OSError as e:
            raise Fail(f"cannot write the proxy log {log}: {e.strerror or e}") from None
    else:
        log = Path(tempfile.mkstemp(prefix="provider-cache-", suffix=".log")[1])
    return ManagedProxy(
        cache_dir=(cache_dir or Path(args.cache_dir)).resolve(),
        mode=mode,
        options=options,
        scripts=[Path(s).resolve() for s in args.scripts],
        confdir=Path(args.confdir).resolve() if args.confdir else None,
        log_path=log.resolve(),
    )


def stats_path(args: argparse.Namespace, cache_dir: Path | None = None) -> Path:
    return (
        Path(args.stats_file)
        if args.stats_file
        else (cache_dir or Path(args.cache_dir)) / STATS_FILE
    )


def run_behind(proxy: ManagedProxy, command: list[str]) -> int:
    """Start the proxy, run the command with the client variables set, stop the proxy."""
    try:
        proxy.start()
    except ProxyError as e:
        raise Fail(f"cannot start the proxy: {e} (log: {proxy.log_path})") from None
    except OSError as e:  # its log or its program, gone since the checks
        proxy.stop()
        raise Fail(f"cannot start the proxy: {e.strerror or e}: {e.filename}") from None
    try:
        job = Job(command, os.environ | proxy.client_env())
    except FileNotFoundError:
        proxy.stop()
        raise Fail(f"command not found: {command[0]}", 127) from None
    except PermissionError:
        proxy.stop()
        raise Fail(f"command not executable: {command[0]}", 126) from None
    interrupted = True  # unless the command ends by itself
    try:
        status = job.wait()
        interrupted = -status in INTERRUPTING or status - 128 in INTERRUPTING
        return status
    except BaseException as e:  # interrupted or terminated: take the command down with us
        job.stop(signal_of(e))
        raise
    finally:
        proxy.stop()
        if interrupted and proxy.proc is not None:  # its run must not count for `prune`
            mark_interrupted(proxy.cache_dir, proxy.proc.pid)


def main(args: argparse.Namespace) -> int:
    command = command_of(args)
    proxy = proxy_for(args, args.mode)
    print(f"provider-cache: {args.mode} mode, cache {proxy.cache_dir}", file=sys.stderr)
    status = run_behind(proxy, command)
    code = OK
    if args.min_hit_rate is not None or args.min_lookups:
        args.files, args.url = [str(stats_path(args))], None
        code, out = gate.judge(gate.load(args), args.min_hit_rate, args.format, args.min_lookups)
        print(out)
    if status == OK and code == OK and not args.proxy_log:
        assert proxy.log_path is not None  # proxy_for always gives the proxy a log file
        proxy.log_path.unlink(missing_ok=True)  # a temporary log is kept only to diagnose a failure
    elif not args.proxy_log:
        print(f"provider-cache: proxy log kept at {proxy.log_path}", file=sys.stderr)
    return status if status != OK else code
