"""Manifests and garbage collection of the remote tier (SPEC §11): a verified run publishes
the keys it used as a write-once manifest; `recordings gc --keep N` removes objects that none
of the last N manifests names and that are older than a grace period (never a `sync
--delete`, which would race with readers)."""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provider_cache.cli.args import BELOW_THRESHOLD, DEFAULT_JOBS, OK, Fail
from provider_cache.cli.remote import (
    finish,
    listed_keys,
    local_keys,
    open_remote,
    push,
    refused,
    transfer,
)
from provider_cache.cli.storeview import (
    open_store,
    require_store,
)
from provider_cache.core import timefmt
from provider_cache.storage.remote import ObjectInfo, RemoteError, RemoteStore
from provider_cache.storage.usage import Usage

#: Seconds between two progress lines of a long transfer (a short one prints none).


#: gc deletes manifests beyond the newest `--keep` + this many (and past the grace period):
#: a later gc with a larger --keep still finds some.
MANIFEST_SLACK = 10


MANIFEST_SCHEMA = 1


def manifest_name(now: float) -> str:
    """`20250102T030405.678Z-1a2b3c4d.json`: sorts by time (to the millisecond); the random
    part keeps two runs of one instant apart."""
    millis = int(now * 1000) % 1000
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{millis:03d}Z-{secrets.token_hex(4)}.json"


def manifest_body(keys: Iterable[str], now: float) -> bytes:
    doc = {"schema": MANIFEST_SCHEMA, "created_at": timefmt.iso(now), "keys": sorted(keys)}
    return json.dumps(doc).encode()


def manifest_keys(data: bytes) -> set[str]:
    """The keys a manifest names; ValueError with a reason when it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
        raise ValueError(f"not a manifest of schema {MANIFEST_SCHEMA}")
    keys = doc.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("its keys are not a list of strings")
    return set(keys)


def publish(remote: RemoteStore, keys: list[str], action: str) -> str:
    """Write a manifest under a new name; returns that name."""
    now = time.time()
    body = manifest_body(keys, now)
    try:
        while True:
            name = manifest_name(now)
            if remote.put_manifest_once(name, body):  # else taken: the same second and bits
                return name
    except RemoteError as e:
        raise refused(action, e) from None


@dataclass(frozen=True)
class LastRun:
    number: int
    lookups: int
    keys: list[str]


def last_run(cache_dir: Path) -> LastRun:
    """The latest run of the usage log, if it counts (made lookups, ended cleanly), and the
    keys of this store that it used: last hit in that run or after (a recording counts as a
    hit of its run). Right after a verified run, that run is the latest."""
    usage = Usage.open_if_present(cache_dir)
    if usage is None:
        raise Fail(f"no usage log in {cache_dir}: no run to name (replay through the proxy first)")
    try:
        number = usage.current_run()
        record = usage.runs().get(number)
        hits = usage.all_hits()
    finally:
        usage.close()
    if record is None or not record.counts:
        raise Fail(
            f"the last run ({number}) does not count (it made no lookups, was cut short, or"
            " is still running): no manifest"
        )
    with open_store(cache_dir, readonly=True) as store:
        stored = set(local_keys(store))
    used = sorted(key for key, hit in hits.items() if hit.run >= number and key in stored)
    return LastRun(number, record.lookups, used)


def do_manifest(args: argparse.Namespace, cache_dir: Path) -> int:
    """Publish the keys the last run used: run it after a gate that passed."""
    require_store(cache_dir)
    run = last_run(cache_dir)
    if not run.keys:
        raise Fail(f"run {run.number} used no entry of this store: no manifest")
    if args.dry_run:
        print(f"would publish a manifest of {len(run.keys)} keys (run {run.number})")
        return OK
    remote = open_remote(args.remote)
    try:
        name = publish(remote, run.keys, "manifest")
    finally:
        remote.close()
    print(f"published manifest {name}: {len(run.keys)} keys of run {run.number}")
    return OK


def publish_verified(args: argparse.Namespace, cache_dir: Path, say: Callable[[str], None]) -> int:
    """`rebuild --remote`, once a run verified: push the entries it used and publish their
    manifest (with --full: the whole store, which that run built). Exit 1 if they did not
    reach the remote: this store is healed, the other machines are not yet."""
    try:
        if args.full:
            require_store(cache_dir)
            with open_store(cache_dir, readonly=True) as store:
                keys = local_keys(store)
        else:
            run = last_run(cache_dir)
            if run.lookups == 0:
                say("the verified run made no provider lookups: nothing to push")
                return OK
            keys = run.keys
        if not keys:
            say("the verified run used no entry: nothing to push")
            return OK
        say(f"pushing the {len(keys)} entries the verified run used to {args.remote}")
        remote = open_remote(args.remote)
        try:
            listed = listed_keys(remote, "rebuild")
            with open_store(cache_dir, readonly=True) as store:
                code = push(
                    store, remote, listed, keys, DEFAULT_JOBS, False, action="rebuild", say=say
                )
            name = publish(remote, keys, "rebuild")
        finally:
            remote.close()
    except Fail as e:
        say(f"the verified entries did not reach the remote: {e}")
        return BELOW_THRESHOLD
    say(f"published manifest {name} ({len(keys)} keys)")
    return code


@dataclass(frozen=True)
class Garbage:
    """What gc deletes, and what it keeps for the grace period alone."""

    objects: list[ObjectInfo]
    young: int
    manifests: list[ObjectInfo]


def select_garbage(
    manifests: list[ObjectInfo],
    named: set[str],
    objects: Iterable[ObjectInfo],
    keep: int,
    cutoff: float,
) -> Garbage:
    """Pure: objects no kept manifest names and uploaded before `cutoff`; manifests beyond the
    newest `keep` + MANIFEST_SLACK and uploaded before `cutoff`. `manifests` in name order."""
    unnamed = [info for info in objects if info.key not in named]
    old = [info for info in unnamed if info.modified < cutoff]
    stale = [m for m in manifests[: -(keep + MANIFEST_SLACK)] if m.modified < cutoff]
    return Garbage(old, len(unnamed) - len(old), stale)


def do_gc(args: argparse.Namespace, cache_dir: Path) -> int:
    remote = open_remote(args.remote, args.jobs)
    try:
        return gc(remote, args.keep, args.grace, args.jobs, args.dry_run)
    finally:
        remote.close()


def gc(remote: RemoteStore, keep: int, grace: float, jobs: int, dry: bool) -> int:
    try:
        manifests = list(remote.manifests())
        if len(manifests) < keep:
            print(
                f"gc: {len(manifests)} manifests of the {keep} needed: nothing is known to be"
                " unused; nothing removed"
            )
            return OK
        kept = manifests[-keep:]
        named = set().union(*(read_manifest(remote, m.key) for m in kept))
        objects = list(remote.objects())
    except RemoteError as e:
        raise refused("gc", e) from None
    garbage = select_garbage(manifests, named, objects, keep, time.time() - grace)
    print(
        f"gc {remote.location}: the {keep} newest manifests ({kept[0].key} … {kept[-1].key})"
        f" name {len(named)} keys; of {len(objects)} objects {len(garbage.objects)} are named"
        f" by none and older than {_age(grace)}, {garbage.young} more are within it"
    )
    doomed = [info.key for info in garbage.objects]
    stale = [m.key for m in garbage.manifests]
    if dry:
        for key in doomed:
            print(f"would remove {key}")
        for name in stale:
            print(f"would remove manifest {name}")
        print(
            f"would remove {len(doomed)} objects and {len(stale)} old manifests"
            " (--dry-run: nothing removed)"
        )
        return OK

    def delete(key: str) -> tuple[str, Any]:
        remote.delete(key)
        return "removed", None

    outcome = transfer("gc", doomed, delete, jobs)
    removed_manifests = 0
    if outcome.stopped is None:
        for name in stale:
            try:
                remote.delete_manifest(name)
            except RemoteError as e:
                outcome.failed.append(name)
                outcome.stopped = e
                break
            removed_manifests += 1
    summary = (
        f"removed {outcome.counts['removed']} objects and {removed_manifests} old manifests,"
        f" failed {len(outcome.failed)}"
    )
    return finish("gc", outcome, summary, print)


def read_manifest(remote: RemoteStore, name: str) -> set[str]:
    data = remote.get_manifest(name)
    why = "it vanished meanwhile (another gc?)" if data is None else ""
    if data is not None:
        try:
            return manifest_keys(data)
        except ValueError as e:
            why = str(e)
    raise Fail(
        f"gc: manifest {name} is unreadable: {why}: nothing removed (if it is garbage,"
        f" delete {remote.location}/manifests/{name} by hand)"
    )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
