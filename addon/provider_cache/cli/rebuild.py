"""`provider-cache rebuild` (scripts/cache_rebuild.py): replay, and if the hit rate is short,
re-record and verify, with backoff.

Each attempt is a record run (misses fetched from the providers and stored) and
a replay run that verifies the result. A failed or still-short attempt waits an
exponential, fully jittered delay (never shorter than a provider's retry-after)
and the state is saved in the cache directory, so CI jobs started inside the
window report when the next rebuild is allowed instead of rebuilding again.
`--full` records into a fresh store and swaps it in only once it verifies.

One rebuild of a store at a time: a second one started meanwhile (another CI job on the
same machine) says so in one line and exits 1 instead of recording beside the first.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provider_cache.cli import backoff, gate, manifests
from provider_cache.cli.args import BAD_INPUT, BELOW_THRESHOLD, OK, Fail, command_of
from provider_cache.cli.proxyctl import ManagedProxy
from provider_cache.cli.runner import run_behind
from provider_cache.core import report
from provider_cache.core.timefmt import stamp_utc
from provider_cache.storage import cachedir, usage
from provider_cache.storage.store import StoreError

HEARTBEAT = 30.0


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class Run:
    status: int
    stats: dict | None
    #: The providers' retry-after seen by the record run before this one, if it was limited.
    limited_for: float | None = None
    mode: str = "replay"

    @property
    def lookups(self) -> int:
        return self.stats["hits"] + self.stats["misses"] if self.stats else 0

    @property
    def hit_rate(self) -> float | None:
        return self.stats["hits"] / self.lookups if self.stats and self.lookups else None

    def meets(self, threshold: float, min_lookups: int = 0) -> bool:
        """With lookups, the hit rate decides. A run without any has nothing to be stale,
        but only if its command succeeded: one that failed before it sent a request (a
        broken command, `false`) says nothing about the recordings. Fewer lookups than
        `min_lookups` (a client that bypassed the proxy) never meet it."""
        if self.stats is None or self.lookups < min_lookups:
            return False
        if self.hit_rate is None:
            return self.status == OK
        return self.hit_rate >= threshold

    @property
    def outcome(self) -> str:
        if self.stats is None:
            return "no stats"
        if self.hit_rate is None:
            return "no provider lookups"
        if self.mode == "record":  # its hit rate is the store's before it recorded: stale
            recorded, misses = self.stats.get("recorded", 0), self.stats["misses"]
            return f"recorded {recorded} of {misses} misses ({self.stats['hits']} hits)"
        return f"hit rate {report.percent(self.hit_rate)}"

    @property
    def retry_after(self) -> float | None:
        if self.limited_for is not None:
            return self.limited_for
        return self.stats.get("retry_after") if self.stats else None


class Rebuild:
    def __init__(self, args: argparse.Namespace, clock: Clock, rng: random.Random):
        self.args, self.clock, self.rng = args, clock, rng
        self.command = command_of(args)
        self.cache_dir = Path(args.cache_dir).resolve()
        self.state_path = self.cache_dir / cachedir.REBUILD_STATE
        self.policy = backoff.Policy(
            args.base_delay, args.factor, args.max_delay, args.max_attempts
        )
        self._workdir: Path | None = None
        self.runs = 0

    @property
    def workdir(self) -> Path:
        """Logs and stats of the runs: removed on success, kept to diagnose a failure."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="provider-cache-rebuild-"))
        return self._workdir

    def say(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime(self.clock.now()))
        print(f"[rebuild {stamp}] {message}", flush=True)

    # -- the steps ---------------------------------------------------------------------------

    def run(self, mode: str, cache_dir: Path, label: str) -> Run:
        self.runs += 1
        name = f"{self.runs:02d}-" + "".join(c if c.isalnum() else "-" for c in label)
        stats_file = self.workdir / f"{name}.json"
        proxy = ManagedProxy(
            cache_dir=cache_dir,
            mode=mode,
            options=[*self.args.options, f"cache_stats_file={stats_file}"],
            scripts=[Path(s).resolve() for s in self.args.scripts],
            confdir=Path(self.args.confdir).resolve() if self.args.confdir else None,
            log_path=self.workdir / f"{name}.log",
        )
        self.say(f"{label}: {mode} run of: {' '.join(self.command)}")
        status = run_behind(proxy, self.command)
        stats = None
        if stats_file.exists():
            try:
                stats = gate.load_file(stats_file)
            except Fail as e:
                self.say(f"{label}: {e}")
        run = Run(status, stats, mode=mode)
        self.say(f"{label}: command exited {status}; {run.outcome}")
        return run

    def attempt(self, number: int) -> Run:
        """Record (into a fresh store with --full), then verify in replay mode."""
        target = self.fresh_dir() if self.args.full else self.cache_dir
        recorded = self.run("record", target, f"attempt {number}/{self.policy.max_attempts} record")
        limited = recorded.stats.get("rate_limited", 0) if recorded.stats else 0
        if limited:
            self.say(
                f"providers rate-limited {limited} requests"
                f" (retry-after {recorded.retry_after or 'not given'})"
            )
        verified = self.run("replay", target, f"attempt {number}/{self.policy.max_attempts} verify")
        if limited:
            # Kept beside the stats: a verify run that left none must not pass for one with
            # no lookups.
            verified.limited_for = recorded.retry_after
        if self.args.full:
            self.finish_full(target, self.meets(verified))
        return verified

    def meets(self, run: Run) -> bool:
        return run.meets(self.args.min_hit_rate, self.args.min_lookups)

    def fresh_dir(self) -> Path:
        fresh = self.cache_dir.parent / f".{self.cache_dir.name}.rebuild"
        shutil.rmtree(fresh, ignore_errors=True)
        return fresh

    def finish_full(self, fresh: Path, verified: bool) -> None:
        """Swap the verified store in with one rename; otherwise the old one stays untouched."""
        if verified:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            os.replace(fresh / cachedir.DATA_FILE, self.cache_dir / cachedir.DATA_FILE)
            self.say(f"swapped the verified fresh store into {self.cache_dir}")
            try:  # its entries arrived now; the old entries' hits are of no use to them
                usage.note_store_arrived(self.cache_dir)
            except StoreError as e:
                self.say(f"{e}: `prune --unused-runs` may count runs from before the swap")
        else:
            self.say("fresh store not verified: the existing store is left as it was")
        shutil.rmtree(fresh, ignore_errors=True)

    # -- the loop ----------------------------------------------------------------------------

    def __call__(self) -> int:
        with StoreLock(self.cache_dir):
            return self.loop()

    def loop(self) -> int:
        state, warning = backoff.load(self.state_path)
        if warning:
            self.say(warning)
        if not self.args.force and (early := self.skip(state)) is not None:
            return early
        if not self.args.full:
            check = self.run("replay", self.cache_dir, "check")
            state.note(self.record("check", check))
            if self.meets(check):
                message = "the cache meets the threshold: nothing to rebuild" + last_rebuild(state)
                return self.succeed(state, check, message)
        for number in range(1, self.policy.max_attempts + 1):
            verified = self.attempt(number)
            state.note(self.record(f"attempt {number}", verified))
            if self.meets(verified):
                return self.succeed(state, verified, f"rebuilt and verified on attempt {number}")
            delay = self.fail(state, verified)
            if number < self.policy.max_attempts:
                self.wait(delay, number + 1)
        return self.give_up(state)

    def skip(self, state: backoff.State) -> int | None:
        now = self.clock.now()
        if state.next_allowed_at and now < state.next_allowed_at:
            self.say(
                f"in backoff after {state.failures} failed attempt(s); next rebuild allowed at "
                f"{stamp(state.next_allowed_at)} (in {duration(state.next_allowed_at - now)}). "
                "Not rebuilding (--force overrides)."
            )
            return BELOW_THRESHOLD
        return None

    def record(self, kind: str, run: Run) -> dict:
        return {
            "at": self.clock.now(),
            "kind": kind,
            "status": run.status,
            "hit_rate": run.hit_rate,
            "misses": run.stats["misses"] if run.stats else None,
        }

    def succeed(self, state: backoff.State, run: Run, message: str) -> int:
        hit_rate = 1.0 if run.hit_rate is None else run.hit_rate  # nothing was stale
        state.failures, state.next_allowed_at = 0, None
        state.last_verified_at, state.last_hit_rate = self.clock.now(), hit_rate
        state.command = self.command
        backoff.save(self.state_path, state)
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if run.hit_rate is None:
            self.say(f"{message}: no provider lookups, and the command succeeded")
        else:
            self.say(f"{message}: hit rate {report.percent(hit_rate)}")
        return (
            manifests.publish_verified(self.args, self.cache_dir, self.say)
            if self.args.remote
            else OK
        )

    def fail(self, state: backoff.State, run: Run) -> float:
        state.failures += 1
        delay = self.policy.delay(state.failures, self.rng, run.retry_after)
        state.next_allowed_at = self.clock.now() + delay
        state.command = self.command
        backoff.save(self.state_path, state)
        if run.stats is None:
            why = "the run left no stats (see its log)"
        elif run.hit_rate is None and run.status != OK:
            why = f"the command exited {run.status} before any provider lookup"
        elif run.lookups < self.args.min_lookups:
            why = (
                f"{run.lookups} provider lookups, fewer than --min-lookups"
                f" {self.args.min_lookups}: did the client bypass the proxy?"
            )
        else:
            threshold = report.percent(self.args.min_hit_rate)
            why = f"hit rate {report.percent(run.hit_rate)} is below {threshold}"
        self.say(f"attempt failed: {why} ({state.failures} consecutive failure(s))")
        return delay

    def wait(self, delay: float, next_attempt: int) -> None:
        self.say(f"waiting {duration(delay)} before attempt {next_attempt} (backoff with jitter)")
        remaining = delay
        while remaining > 0:
            step = min(HEARTBEAT, remaining)
            self.clock.sleep(step)
            remaining -= step
            if remaining > 0:
                self.say(f"… {duration(remaining)} to go")

    def give_up(self, state: backoff.State) -> int:
        # fail() sets next_allowed_at on every attempt, and --max-attempts is at least 1.
        allowed_at = state.next_allowed_at or self.clock.now()
        self.say(
            f"giving up for now after {self.policy.max_attempts} attempt(s); next rebuild allowed"
            f" at {stamp(allowed_at)}. Run logs and stats: {self.workdir}"
        )
        return BELOW_THRESHOLD


class StoreLock:
    """An exclusive, non-blocking flock on `.<name>.rebuild.lock` beside the cache directory
    (where --full builds its fresh store), held for the whole rebuild.

    Not waiting: a rebuild runs the suite at least twice and may back off for minutes, so a
    second one would mostly time out, or else rebuild again what the first just verified.
    The file is removed on release, so nothing is left beside the store; a process that
    opened it just before the removal finds it replaced after locking, and tries again.
    """

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self.path = cache_dir.parent / f".{cache_dir.name}.rebuild.lock"
        self.fd: int | None = None

    def __enter__(self) -> StoreLock:
        while self.fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise Fail(f"cannot lock {self.path}: {e.strerror or e}", BAD_INPUT) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Fail(f"cannot lock {self.path}: {e.strerror}", BAD_INPUT) from None
                pid = f" (pid {holder})" if holder.isdigit() else ""
                raise Fail(
                    f"another rebuild of {self.cache_dir} is running{pid}: not starting a second"
                    " one; run it again when that one has finished",
                    BELOW_THRESHOLD,
                ) from None
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
            else:  # released and removed by its holder meanwhile: lock the new one
                os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: no one locks a stale file
            os.close(self.fd)
            self.fd = None


def last_rebuild(state: backoff.State) -> str:
    attempts = [h for h in state.history if h["kind"].startswith("attempt")]
    return f" (last rebuild {stamp(attempts[-1]['at'])})" if attempts else ""


def stamp(at: float) -> str:
    return stamp_utc(at)


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def main(
    args: argparse.Namespace, clock: Clock | None = None, rng: random.Random | None = None
) -> int:
    return Rebuild(args, clock or SystemClock(), rng or random.Random())()
