"""`provider-cache recordings push | pull | sync | remote-rm`: move entries between this
store and the remote tier (SPEC §11); manifests and gc are in cli/manifests.py.

Only what is missing moves: the remote is listed once, and each missing entry is one
object written once (`If-None-Match: *`), so an object that appeared meanwhile is "already
there", never replaced. A pulled object is stored only once it checks (remoteobject.unwrap);
a corrupt one is named and skipped. Transfers run a few at a time (R2 throttles many
connections) and say how far they are every few seconds.

Exit codes: 0 done; 1 some entries did not move (a corrupt object, a local entry that does
not decode, failures after retries: run it again); 2 bad input, or a remote that cannot
be used (unreachable, no such bucket, access refused, boto3 missing).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provider_cache.cli.args import BAD_INPUT, BELOW_THRESHOLD, DEFAULT_JOBS, OK, Fail
from provider_cache.cli.storeview import (
    MIN_PREFIX,
    decode,
    open_store,
    shown_key,
    stamp_arrivals,
)
from provider_cache.core import remoteobject
from provider_cache.core.remoteobject import CorruptObject, RemoteLocation
from provider_cache.storage import cachedir
from provider_cache.storage.remote import RemoteError, RemoteStore
from provider_cache.storage.store import Store, Txn

#: Seconds between two progress lines of a long transfer (a short one prints none).
PROGRESS_EVERY = 5.0
#: Pulled entries written per local transaction.
PULL_BATCH = 256
#: Failed objects (each after its retries) after which a transfer stops: the remote is in
#: trouble, and going on would cost a timeout per object.
MAX_FAILURES = 10
#: What an action needs when the remote answers AccessDenied.
RIGHTS = {
    "push": "write access (s3:ListBucket, s3:PutObject)",
    "pull": "read access (s3:ListBucket, s3:GetObject)",
    "sync": "read and write access (s3:ListBucket, s3:GetObject, s3:PutObject)",
    "remote-rm": "delete rights (s3:ListBucket, s3:DeleteObject), which no CI job should hold",
    "gc": "delete rights (s3:ListBucket, s3:GetObject, s3:DeleteObject)",
    "manifest": "write access (s3:PutObject)",
    "rebuild": "write access (s3:ListBucket, s3:PutObject)",
}


# -- the remote, and failures as one line -----------------------------------------------------


def open_remote(location: RemoteLocation, jobs: int = DEFAULT_JOBS) -> RemoteStore:
    try:
        return RemoteStore(location, connections=jobs)
    except RemoteError as e:  # boto3 missing, an unusable AWS configuration
        raise Fail(str(e)) from None


def refused(action: str, error: RemoteError) -> Fail:
    """The Fail of a remote that cannot be used for `action`: exit 2, and the right it needs
    when it said AccessDenied."""
    need = f": {action} needs {RIGHTS[action]}" if error.code == "AccessDenied" else ""
    return Fail(f"{action}: {error}{need}", BAD_INPUT)


def listed_keys(remote: RemoteStore, action: str) -> set[str]:
    """The remote's keys, listed once; a listing that fails is a remote that cannot be used."""
    try:
        return set(remote.keys())
    except RemoteError as e:
        raise refused(action, e) from None


def is_cache_key(location: RemoteLocation, key: str) -> bool:
    """Whether `key` can name an object (an import may bring any key)."""
    try:
        location.object_name(key)
    except ValueError:
        return False
    return True


# -- transfers ----------------------------------------------------------------------------------


class Progress:
    """A line on stderr every `every` seconds of a long transfer; none for a short one."""

    def __init__(
        self,
        verb: str,
        total: int,
        *,
        every: float = PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.verb, self.total, self.every, self.clock = verb, total, every, clock
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.started = self.last = clock()

    def tick(self, done: int, failed: int) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        rate = done / (now - self.started) if now > self.started else 0.0
        percent = done * 100 // self.total if self.total else 100
        self.say(f"{self.verb}: {done} of {self.total} ({percent}%), {failed} failed, {rate:.0f}/s")


@dataclass
class Outcome:
    """What a transfer did: counts by result, the keys that failed, and why it stopped."""

    counts: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    stopped: RemoteError | None = None

    @property
    def finished(self) -> int:
        return sum(self.counts.values()) + len(self.failed)


#: One object's work on a worker thread: (result, payload) for the main thread.
Work = Callable[[str], tuple[str, Any]]


def transfer(
    verb: str,
    keys: list[str],
    work: Work,
    jobs: int,
    on_result: Callable[[str, str, Any], None] = lambda key, result, payload: None,
) -> Outcome:
    """`work` on each key, `jobs` at a time; `on_result` on the main thread as each ends.

    A failure that will not heal (AccessDenied, NoSuchBucket) stops it at once; others are
    named one per line, and MAX_FAILURES of them stop it too."""
    outcome = Outcome()
    progress = Progress(verb, len(keys))
    for key, result in parallel(work, keys, jobs):
        if isinstance(result, RemoteError):
            outcome.failed.append(key)
            if not result.transient or len(outcome.failed) >= MAX_FAILURES:
                outcome.stopped = result
                break
            print(f"{verb}: failed {key}: {result}", file=sys.stderr)
        else:
            outcome.counts[result[0]] += 1
            on_result(key, *result)
        progress.tick(outcome.finished, len(outcome.failed))
    return outcome


def parallel(
    work: Work, keys: Iterable[str], jobs: int
) -> Iterator[tuple[str, tuple[str, Any] | RemoteError]]:
    """(key, work(key) or its RemoteError) as each ends, at most 2 x `jobs` queued: a stop
    (the caller leaves the loop, Ctrl-C) drops the rest and waits only for those running."""
    todo = iter(keys)
    running: dict[Future, str] = {}

    def one(key: str) -> tuple[str, Any] | RemoteError:
        try:
            return work(key)
        except RemoteError as e:
            return e

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="remote") as pool:
        try:
            while True:
                for key in todo:
                    running[pool.submit(one, key)] = key
                    if len(running) >= 2 * jobs:
                        break
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield running.pop(future), future.result()
        finally:
            for future in running:
                future.cancel()


def finish(action: str, outcome: Outcome, summary: str, say: Callable[[str], None]) -> int:
    """Say the summary; then how it stopped, if it did. Exit 1 when some did not move."""
    say(summary)
    stopped = outcome.stopped
    if stopped is not None and not stopped.transient:
        raise refused(action, stopped)
    if stopped is not None:
        raise Fail(
            f"{action}: stopped after {len(outcome.failed)} failures, the last: {stopped};"
            " run it again later",
            BELOW_THRESHOLD,
        )
    return BELOW_THRESHOLD if outcome.failed else OK


def dry_run(verb: str, keys: list[str], summary: str) -> int:
    for key in keys:
        print(f"would {verb} {key}")
    print(f"{summary} (--dry-run: nothing written)")
    return OK


# -- push -----------------------------------------------------------------------------------


def do_push(args: argparse.Namespace, cache_dir: Path) -> int:
    with open_store(cache_dir, readonly=True) as store:
        remote = open_remote(args.remote, args.jobs)
        try:
            listed = listed_keys(remote, "push")
            return push(store, remote, listed, local_keys(store), args.jobs, args.dry_run)
        finally:
            remote.close()


def local_keys(store: Store) -> list[str]:
    return [shown_key(key) for key, _ in store.items()]


def push(
    store: Store,
    remote: RemoteStore,
    listed: set[str],
    keys: list[str],
    jobs: int,
    dry: bool,
    *,
    action: str = "push",
    say: Callable[[str], None] = print,
) -> int:
    """Upload `keys` (local entries) that the remote did not list; an entry that does not
    decode, or whose key is not a cache key (an import's), is skipped and counted."""
    foreign = {key for key in keys if not is_cache_key(remote.location, key)}
    there = [key for key in keys if key in listed]
    missing = [key for key in keys if key not in listed and key not in foreign]
    if dry:
        return dry_run("push", missing, f"would push {len(missing)}, already there {len(there)}")

    def upload(key: str) -> tuple[str, Any]:
        value = store.get(key.encode())
        if value is None:
            return "gone", None  # removed from the store meanwhile
        if decode(key.encode(), value).entry is None:
            return "corrupt", None
        return ("pushed" if remote.put_once(key, remoteobject.wrap(key, value)) else "there"), None

    outcome = transfer(action, missing, upload, jobs)
    counts = outcome.counts
    skipped = counts["corrupt"] + len(foreign)
    summary = (
        f"pushed {counts['pushed']}, already there {len(there) + counts['there']},"
        f" failed {len(outcome.failed)}"
    )
    if skipped:
        summary += f", skipped {skipped} (corrupt, or not a cache key: `recordings verify`)"
    code = finish(action, outcome, summary, say)
    return BELOW_THRESHOLD if skipped else code


# -- pull -----------------------------------------------------------------------------------


def do_pull(args: argparse.Namespace, cache_dir: Path) -> int:
    remote = open_remote(args.remote, args.jobs)
    try:
        return pull(cache_dir, remote, listed_keys(remote, "pull"), args.jobs, args.dry_run)
    finally:
        remote.close()


def keys_here(cache_dir: Path) -> set[str]:
    """The local keys; none when there is no store yet (pull makes one)."""
    if not (cache_dir / cachedir.DATA_FILE).exists():
        return set()
    with open_store(cache_dir, readonly=True) as store:
        return set(local_keys(store))


def pull(cache_dir: Path, remote: RemoteStore, listed: set[str], jobs: int, dry: bool) -> int:
    """Download the listed objects missing here; each is stored only if it checks, and never
    over an entry a proxy recorded here meanwhile."""
    here = keys_here(cache_dir)
    missing = sorted(listed - here)
    summary = f"already here {len(listed & here)}"
    if dry:
        return dry_run("pull", missing, f"would pull {len(missing)}, {summary}")
    if not missing:
        print(f"pulled 0, {summary}, corrupt 0, failed 0")
        return OK

    def fetch(key: str) -> tuple[str, Any]:
        data = remote.get(key)
        if data is None:
            return "gone", None  # deleted meanwhile (remote-rm, gc)
        try:
            return "fetched", remoteobject.unwrap(data, key)
        except CorruptObject as e:
            return "corrupt", str(e)

    batch: list[tuple[bytes, bytes]] = []
    written: list[bytes] = []
    with open_store(cache_dir, readonly=False, create=True) as store:

        def arrived(key: str, result: str, payload: Any) -> None:
            if result == "corrupt":
                print(f"pull: corrupt object {key}: {payload}: not stored", file=sys.stderr)
                return
            if result == "fetched":
                batch.append((key.encode(), payload))
            if len(batch) >= PULL_BATCH:
                written.extend(store.write(put_absent(batch), need=_size(batch)))
                batch.clear()

        try:
            outcome = transfer("pull", missing, fetch, jobs, arrived)
        finally:  # what was fetched is kept, even on Ctrl-C
            if batch:
                written.extend(store.write(put_absent(batch), need=_size(batch)))
    stamp_arrivals(cache_dir, written)
    appeared = outcome.counts["fetched"] - len(written)
    corrupt = outcome.counts["corrupt"]
    line = (
        f"pulled {len(written)}, already here {len(listed & here) + appeared},"
        f" corrupt {corrupt}, failed {len(outcome.failed)}"
    )
    code = finish("pull", outcome, line, print)
    return BELOW_THRESHOLD if corrupt else code


def put_absent(items: list[tuple[bytes, bytes]]) -> Callable[[Txn], list[bytes]]:
    """One transaction writing each key that is still absent; returns those written."""

    def put(txn: Txn) -> list[bytes]:
        fresh = [(key, value) for key, value in items if txn.get(key) is None]
        for key, value in fresh:
            txn.put(key, value)
        return [key for key, _ in fresh]

    return put


def _size(items: list[tuple[bytes, bytes]]) -> int:
    return sum(len(k) + len(v) for k, v in items)


# -- sync, remote-rm --------------------------------------------------------------------------


def do_sync(args: argparse.Namespace, cache_dir: Path) -> int:
    """Pull, then push, from one listing; a remote that cannot be used stops it."""
    remote = open_remote(args.remote, args.jobs)
    try:
        listed = listed_keys(remote, "sync")
        pulled = pull(cache_dir, remote, listed, args.jobs, args.dry_run)
        if not (cache_dir / cachedir.DATA_FILE).exists():  # nothing pulled, nothing to push
            return pulled
        with open_store(cache_dir, readonly=True) as store:
            pushed = push(store, remote, listed, local_keys(store), args.jobs, args.dry_run)
        return max(pulled, pushed)
    finally:
        remote.close()


def do_remote_rm(args: argparse.Namespace, cache_dir: Path) -> int:
    """Delete remote objects: how an admin replaces a bad entry on purpose (then push)."""
    remote = open_remote(args.remote)
    try:
        listed = sorted(listed_keys(remote, "remote-rm"))
        keys = [find_remote_key(listed, prefix) for prefix in args.keys]
        for key in keys:
            try:
                remote.delete(key)
            except RemoteError as e:
                raise refused("remote-rm", e) from None
            print(f"removed remote object {key}")
    finally:
        remote.close()
    return OK


def find_remote_key(listed: list[str], prefix: str) -> str:

    if len(prefix) < MIN_PREFIX:
        raise Fail(f"key prefix {prefix!r} is too short: give at least {MIN_PREFIX} characters")
    found = [key for key in listed if key.startswith(prefix)]
    if not found:
        raise Fail(f"no remote object with key {prefix}: nothing removed")
    if len(found) > 1:
        raise Fail(f"key prefix {prefix} is ambiguous: {', '.join(k[:16] for k in found)}")
    return found[0]
