"""`recordings prune` (SPEC §7): remove entries on evidence only.

A run counts when it made lookups and every proxy of it ended cleanly (storage/usage.py);
an entry is unused when it was present for each of the last N counted runs and hit in none.
What goes is first written, in the export form, to a file `recordings import` restores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provider_cache.cli.args import OK, Fail
from provider_cache.cli.storeview import (
    decode,
    forget_usage,
    open_store,
    require_store,
    when,
    writing,
)
from provider_cache.core import textform
from provider_cache.core.records import Entry
from provider_cache.storage import cachedir
from provider_cache.storage.atomic import write_atomically_bytes
from provider_cache.storage.store import StoreError, Txn
from provider_cache.storage.usage import KeyUsage, Usage, Window, window


def do_prune(args: argparse.Namespace, cache_dir: Path) -> int:
    """Remove entries on evidence only (see storage/usage.py): unused in the last N counted
    runs and/or recorded longer ago than AGE (both given: entries that are both). What goes
    is listed, then kept in a file `import` restores, written before anything is deleted."""
    if args.unused_runs is None and args.older_than is None:
        raise Fail("prune: give --unused-runs N, --older-than AGE, or both")
    if args.unused_runs is not None and args.unused_runs < 1:
        raise Fail("--unused-runs must be at least 1")
    require_store(cache_dir)
    removed_to = None if args.dry_run else _removed_path(args.removed_to, cache_dir)
    goes, criteria = _prune_rule(args, cache_dir)
    if goes is None:
        print(f"{criteria}: nothing is known to be unused; nothing removed")
        return OK
    with open_store(cache_dir, readonly=args.dry_run) as store:
        rows = [(key, value, decode(key, value).entry) for key, value in store.items()]
        # A corrupt entry is not known to be unused: prune never removes one.
        stale = [(key, value, e) for key, value, e in rows if e is not None and goes(e)]
        if stale and removed_to is not None:  # kept first: if that fails, nothing goes
            _keep_removed(removed_to, [e for _, _, e in stale], cache_dir)
        verb = "would remove" if args.dry_run else "removing"
        for _, _, e in stale:
            print(f"{verb} {_pruned_line(e, goes.usage.get(e.key))}")
        if args.dry_run or not stale:
            would = "would be removed; " if stale else ""
            dry = " (--dry-run)" if args.dry_run else ""
            print(f"{len(stale)} of {len(rows)} entries {criteria}: {would}nothing removed{dry}")
            return OK
        gone = set(store.write(_deleter([(key, value) for key, value, _ in stale])))
    changed = len(stale) - len(gone)
    kept = f" ({changed} changed meanwhile and were kept)" if changed else ""
    print(
        f"removed {len(gone)} of {len(rows)} entries {criteria}{kept}; restore them with:"
        f" recordings --cache-dir {shlex.quote(str(cache_dir))} import"
        f" {shlex.quote(str(removed_to))}"
    )
    try:
        forget_usage(cache_dir, [e.key for key, _, e in stale if key in gone])
    except StoreError as e:  # bookkeeping: a removed key's usage record is harmless
        print(f"warning: {e}: the usage log still lists the removed entries", file=sys.stderr)
    return OK


@dataclass
class PruneRule:
    """Whether an entry goes: each criterion given must hold."""

    window: Window | None
    cutoff: float | None
    usage: dict[str, KeyUsage]

    def __call__(self, entry: Entry) -> bool:
        if self.cutoff is not None and not entry.recorded_at < self.cutoff:
            return False
        return self.window is None or self.window.unused(
            entry.recorded_at, self.usage.get(entry.key)
        )


def _prune_rule(args: argparse.Namespace, cache_dir: Path) -> tuple[PruneRule | None, str]:
    """The rule and the words for it; no rule (and why) when too few runs count."""
    criteria = []
    last_runs, key_usage = None, {}
    if args.unused_runs is not None:
        n = args.unused_runs
        log = Usage.open_if_present(cache_dir)
        runs, total = ({}, 0) if log is None else (log.runs(), log.current_run())
        key_usage = log.all_keys() if log is not None else {}
        if log is not None:
            log.close()
        last_runs = window(runs, n)
        if last_runs is None:
            counted = sum(record.counts for record in runs.values())
            return None, (
                f"only {_plural(counted, 'counted run')} of the {n} needed"
                f" ({_plural(total, 'run')} in all; a run counts when it made lookups and"
                " ended cleanly)"
            )
        criteria.append(
            f"not hit in the last {_plural(n, 'counted run')} ({_runs(last_runs.runs)})"
        )
    cutoff = None
    if args.older_than is not None:
        cutoff = time.time() - args.older_than
        criteria.append(f"recorded before {when(cutoff)} UTC")
    return PruneRule(last_runs, cutoff, key_usage), " and ".join(criteria)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _runs(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"run {numbers[0]}"
    if len(numbers) <= 6:
        return "runs " + ", ".join(map(str, numbers))
    return f"runs {numbers[0]} … {numbers[-1]}"


def _pruned_line(entry: Entry, key_usage: KeyUsage | None) -> str:
    hit = key_usage.hit if key_usage else None
    last = f"run {hit.run}" if hit else "never"
    return (
        f"{entry.key[:12]}  recorded {when(entry.recorded_at)}  last hit {last}"
        f"  {entry.request.method} {entry.request.url}"
    )


def _removed_path(given: str | None, cache_dir: Path) -> Path:
    """`--removed-to`, which must be a new file, or a new `pruned-<time>.json` in the cache."""
    if given:
        path = Path(given)
        try:
            exists, parent_is_dir = path.exists(), path.parent.is_dir()
        except OSError as e:
            raise Fail(f"cannot write {path}: {e.strerror or e}") from None
        if exists:
            raise Fail(f"{path} exists: not overwriting it; give --removed-to a new file")
        if not parent_is_dir:  # a typo is not a directory to create
            raise Fail(f"cannot write {path}: No such file or directory")
        return path
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path, n = cache_dir / f"{cachedir.PRUNED_PREFIX}{stamp}{cachedir.PRUNED_SUFFIX}", 1
    while path.exists():  # two prunes within a second
        n += 1
        path = cache_dir / f"{cachedir.PRUNED_PREFIX}{stamp}-{n}{cachedir.PRUNED_SUFFIX}"
    return path


def _keep_removed(path: Path, removed: list[Entry], cache_dir: Path) -> None:
    """The export text of what goes, durable on disk before anything is deleted."""
    if path.parent.resolve() == cache_dir.resolve():
        with contextlib.suppress(OSError):  # keeps it out of version control
            cachedir.ensure_gitignore(cache_dir)
    writing(path, lambda: write_atomically_bytes(path, textform.dumps(removed).encode()))
    writing(path, lambda: _fsync_directory(path.parent))  # the rename itself is durable


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _deleter(items: list[tuple[bytes, bytes]]) -> Callable[[Txn], list[bytes]]:
    """One transaction deleting each key that still holds the value prune saw (a proxy may
    have recorded it again meanwhile); returns the keys deleted."""

    def delete(txn: Txn) -> list[bytes]:
        gone = [key for key, value in items if txn.get(key) == value]
        for key in gone:
            txn.delete(key)
        return gone

    return delete
