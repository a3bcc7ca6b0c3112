"""`provider-cache recordings` (scripts/recordings.py): list, show, delete, prune, export,
import, merge and verify a store (SPEC §7).

Read-only actions open LMDB read-only, so they work while a proxy is running. Only
`import` and `merge` create a store; the others refuse a directory that holds none.
An entry that does not decode is never skipped silently: `ls` lists it as corrupt,
`show` says so, and `export` and `merge` copy the others, say how many they skipped
and exit 1 (as `verify` does when it finds a bad entry).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from provider_cache.cli.args import BELOW_THRESHOLD, OK, Fail
from provider_cache.core import records, report, textform, timefmt
from provider_cache.core.records import Entry
from provider_cache.storage import cachedir
from provider_cache.storage.atomic import write_atomically_bytes
from provider_cache.storage.store import Store, StoreError, Txn
from provider_cache.storage.usage import KeyUsage, LastHit, Usage, Window, note_arrivals, window

MIN_PREFIX = 6
#: What import and merge say they did not do.
PAST = {"import": "imported", "merge": "merged"}
#: LMDB's limit on a key (its compiled-in MDB_MAXKEYSIZE); an empty key is refused too.
MAX_KEY_BYTES = 511


def require_store(cache_dir: Path) -> None:
    if not (cache_dir / cachedir.DATA_FILE).exists():
        raise Fail(f"no recordings store in {cache_dir}")


def open_store(cache_dir: Path, *, readonly: bool, create: bool = False) -> Store:
    """The store of `cache_dir`; only with `create` (import, merge) may it be a new one, so
    that a mistyped --cache-dir never leaves an empty store behind."""
    if not create:
        require_store(cache_dir)
    try:
        return Store(cache_dir, readonly=readonly)
    except StoreError as e:
        raise Fail(str(e)) from None


def shown_key(raw: bytes) -> str:
    """A stored key as text: ours are hex, a foreign one may be any bytes."""
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Stored:
    """One stored value: its entry, or why it is corrupt."""

    raw_key: bytes
    entry: Entry | None
    problem: str = ""

    @property
    def key(self) -> str:
        return shown_key(self.raw_key)


def decode(raw_key: bytes, value: bytes) -> Stored:
    try:
        entry = records.unpack(value)
    except records.CorruptEntry as e:
        return Stored(raw_key, None, str(e))
    if entry.key.encode("utf-8", "surrogatepass") != raw_key:
        return Stored(raw_key, None, f"holds the entry of another key {entry.key}")
    return Stored(raw_key, entry)


def scan(store: Store) -> list[Stored]:
    return [decode(k, v) for k, v in store.items()]


def entries(rows: list[Stored]) -> list[Entry]:
    return [row.entry for row in rows if row.entry is not None]


def skipped_corrupt(action: str, rows: list[Stored], where: Path) -> int:
    """Copying actions copy what decodes; a skipped entry is said on stderr and exits 1."""
    skipped = len(rows) - len(entries(rows))
    if not skipped:
        return OK
    noun = "entry" if skipped == 1 else "entries"
    print(
        f"{action}: skipped {skipped} corrupt {noun} of {len(rows)} in {where}"
        " (`recordings verify` names them)",
        file=sys.stderr,
    )
    return BELOW_THRESHOLD


def find_key(store: Store, prefix: str) -> bytes:
    """The one stored key starting with `prefix`, compared as bytes (argv bytes that are not
    UTF-8 arrive as surrogates and are given back as the bytes they were)."""
    if len(prefix) < MIN_PREFIX:
        raise Fail(f"key prefix {prefix!r} is too short: give at least {MIN_PREFIX} characters")
    wanted = os.fsencode(prefix)
    found = [k for k, _ in store.items() if k.startswith(wanted)]
    if not found:
        raise Fail(f"no entry with key {prefix}")
    if len(found) > 1:
        keys = ", ".join(shown_key(k)[:16] for k in found)
        raise Fail(f"key prefix {prefix} is ambiguous: {keys}")
    return found[0]


def when(timestamp: float | None) -> str:
    return "-" if timestamp is None else timefmt.stamp(timestamp)


def size(n: int) -> str:
    for unit in ("B", "K", "M"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}G"


# -- read-only actions ---------------------------------------------------------------------


def do_ls(args: argparse.Namespace, cache_dir: Path) -> int:
    usage = Usage.open_if_present(cache_dir)
    hits = usage.all_hits() if usage else {}
    with open_store(cache_dir, readonly=True) as store:
        # A filter cannot rule a corrupt entry out (nothing of it is known): always listed.
        rows = [r for r in scan(store) if not r.entry or _matches(r.entry, args.host, args.path)]
    for row in rows:
        if row.entry is None:
            if args.json:
                print(json.dumps({"key": row.key, "corrupt": row.problem}))
            else:
                print(f"{row.key[:12]}  corrupt: {row.problem}")
            continue
        e = row.entry
        hit = hits.get(e.key)
        if args.json:
            print(json.dumps(_summary(e, hit)))
            continue
        streamed = f" sse:{len(e.response.chunks)}" if e.response.chunks is not None else ""
        last = f"run {hit.run} {when(hit.at)}" if hit else "never"
        print(
            f"{e.key[:12]}  {e.response.status}  {size(len(e.response.content)):>5}{streamed}  "
            f"recorded {when(e.recorded_at)}  last hit {last}  {e.request.method} {e.request.url}"
        )
    if not args.json:
        corrupt = len(rows) - len(entries(rows))
        print(f"{len(rows)} entries" + (f", {corrupt} corrupt" if corrupt else ""))
    return OK


def _matches(entry: Entry, host: str | None, path: str | None) -> bool:
    url = urlsplit(entry.request.url)
    return (not host or fnmatchcase(url.hostname or "", host.lower())) and (
        not path or fnmatchcase(url.path, path)
    )


def _summary(entry: Entry, hit: LastHit | None) -> dict:
    return {
        "key": entry.key,
        "method": entry.request.method,
        "url": entry.request.url,
        "status": entry.response.status,
        "size": len(entry.response.content),
        "chunks": None if entry.response.chunks is None else len(entry.response.chunks),
        "recorded_at": entry.recorded_at,
        "recorded_run": entry.meta.get("recorded_run"),
        "last_hit_run": hit.run if hit else None,
        "last_hit_at": hit.at if hit else None,
    }


def do_show(args: argparse.Namespace, cache_dir: Path) -> int:
    with open_store(cache_dir, readonly=True) as store:
        key = find_key(store, args.key)
        data = store.get(key)
        if data is None:  # removed by another process since find_key saw it
            raise Fail(f"no entry with key {args.key}")
    stored = decode(key, data)
    if stored.entry is None:
        raise Fail(
            f"entry {stored.key} is corrupt ({stored.problem}): `recordings verify` lists every"
            f" bad entry, `recordings rm {stored.key[:12]}` removes this one"
        )
    entry = stored.entry
    req, resp = entry.request, entry.response
    print(f"key       {entry.key}")
    print(f"recorded  {when(entry.recorded_at)} UTC (run {entry.meta.get('recorded_run', '?')})")
    print(f"\n{req.method} {req.url}")
    print(_headers(req.headers) + "\n\n" + _body(req.body))
    print(f"\n{resp.status} {resp.reason}")
    print(_headers(resp.headers) + "\n")
    if resp.chunks is None:
        print(_body(resp.body))
    else:
        print(f"(streamed: {len(resp.chunks)} chunks, {len(resp.content)} bytes)")
        for i, chunk in enumerate(resp.chunks, 1):
            print(f"--- chunk {i}\n{_body(chunk)}", end="" if chunk.endswith(b"\n") else "\n")
    return OK


def _headers(headers: list[tuple[bytes, bytes]]) -> str:
    return "\n".join(f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in headers)


def _body(body: bytes) -> str:
    if not body:
        return "(no body)"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"({len(body)} bytes of binary data)"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def do_verify(args: argparse.Namespace, cache_dir: Path) -> int:
    bad = []
    count = 0
    with open_store(cache_dir, readonly=True) as store:
        for raw_key, value in store.items():
            count += 1
            key = raw_key.decode("latin-1")
            try:
                entry = records.unpack(value)
            except records.CorruptEntry as e:
                bad.append(f"{key}: {e}")
                continue
            if entry.key != key:
                bad.append(f"{key}: holds the entry of another key {entry.key}")
    for line in bad:
        print(f"bad entry {line}")
    print(f"{count} entries, {count - len(bad)} decode, {len(bad)} bad")
    return OK if not bad else BELOW_THRESHOLD


def do_export(args: argparse.Namespace, cache_dir: Path) -> int:
    """Every entry that decodes; a valid document even when some do not (those are counted
    on stderr, and the exit is 1: the export is not the whole store)."""
    output = Path(args.output) if args.output else None
    if args.format == "mitm" and output is None:
        raise Fail("--format mitm needs -o FILE")
    if output is not None and not output.parent.is_dir():  # a typo is not a directory to create
        raise Fail(f"cannot write {output}: No such file or directory")
    with open_store(cache_dir, readonly=True) as store:
        rows = scan(store)
    good = entries(rows)
    if output is None:
        print(textform.dumps(good), end="")
    elif args.format == "mitm":
        from provider_cache.mitm.flowfile import write_flows  # needs mitmproxy: imported only here

        count = _writing(output, lambda: write_flows(good, output))
        print(f"exported {count} entries to {output} (open with: mitmweb --rfile {output})")
    else:
        _writing(output, lambda: write_atomically_bytes(output, textform.dumps(good).encode()))
        print(f"exported {len(good)} entries to {output}")
    return skipped_corrupt("export", rows, cache_dir)


def _writing[T](path: Path, write: Callable[[], T]) -> T:
    try:
        return write()
    except OSError as e:
        raise Fail(f"cannot write {path}: {e.strerror or e}") from None


def do_misses(args: argparse.Namespace, cache_dir: Path) -> int:
    from provider_cache.cli.gate import load_file

    stats = load_file(Path(args.stats_file) if args.stats_file else cache_dir / cachedir.STATS_FILE)
    missed = stats.get("missed") or []  # validated: a list of missed requests, if present
    if not missed:
        print("no missed requests")
        return OK
    for m in missed:
        print(f"{m['count']}x {m['method']} {m['url']}  key {m['key']}")
        for line in report.explain(m):
            print(f"    {line}")
    return OK


# -- actions that write ----------------------------------------------------------------------


def do_rm(args: argparse.Namespace, cache_dir: Path) -> int:
    with open_store(cache_dir, readonly=False) as store:
        keys = [find_key(store, prefix) for prefix in args.keys]
        for key in keys:
            store.delete(key)
    shown = [shown_key(k) for k in keys]
    _forget_usage(cache_dir, shown)
    for name in shown:
        print(f"removed {name}")
    return OK


def _forget_usage(cache_dir: Path, keys: list[str]) -> None:
    if Usage.open_if_present(cache_dir) is None:
        return
    usage = Usage(cache_dir)
    try:
        for key in keys:
            usage.forget(key)
    finally:
        usage.close()


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
        _forget_usage(cache_dir, [e.key for key, _, e in stale if key in gone])
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
    _writing(path, lambda: write_atomically_bytes(path, textform.dumps(removed).encode()))
    _writing(path, lambda: _fsync_directory(path.parent))  # the rename itself is durable


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


def do_import(args: argparse.Namespace, cache_dir: Path) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Fail(f"cannot read {path}: {e.strerror}") from None
    if data.lstrip()[:1] == b"{":
        try:
            incoming = textform.loads(data.decode("utf-8"))
        except (textform.BadExport, UnicodeDecodeError) as e:
            raise Fail(f"{path}: {e}") from None
    else:
        from provider_cache.mitm import flowimport  # needs mitmproxy: imported only here

        try:
            incoming = flowimport.entries_from_flow_file(path)
        except flowimport.BadFlowFile as e:
            raise Fail(str(e)) from None
    return _merge_in(cache_dir, incoming, dry_run=False, source=str(path), action="import")


def do_merge(args: argparse.Namespace, cache_dir: Path) -> int:
    other = Path(args.other)
    with open_store(other, readonly=True) as store:
        rows = scan(store)
    code = _merge_in(
        cache_dir, entries(rows), dry_run=args.dry_run, source=str(other), action="merge"
    )
    return code if code != OK else skipped_corrupt("merge", rows, other)


def _key_bytes(entry: Entry, source: str, action: str) -> bytes:
    """The key as LMDB stores it; one LMDB refuses stops the whole import before any write."""
    try:
        raw = entry.key.encode()
    except UnicodeEncodeError:
        raise Fail(
            f"{source}: entry key {entry.key!r} is not text: nothing {PAST[action]}"
        ) from None
    if not 0 < len(raw) <= MAX_KEY_BYTES:
        shown = entry.key if len(entry.key) <= 16 else entry.key[:16] + "…"
        raise Fail(
            f"{source}: entry key {shown!r} is {len(raw)} bytes, and LMDB keys are"
            f" 1 to {MAX_KEY_BYTES} bytes: nothing {PAST[action]}"
        )
    return raw


def _note_arrivals(cache_dir: Path, keys: list[bytes]) -> None:
    """Merged and imported entries arrived now: no run before this may make them unused."""
    try:
        note_arrivals(cache_dir, keys)
    except StoreError as e:
        print(
            f"warning: {e}: `prune --unused-runs` may count runs from before these entries arrived",
            file=sys.stderr,
        )


def _merge_in(
    cache_dir: Path, incoming: list[Entry], *, dry_run: bool, source: str, action: str
) -> int:
    """Same key in both: keep the newer recording; report where the answers differ.

    All or nothing: a key LMDB cannot hold, or a corrupt entry of ours under an incoming key
    (perhaps written by a newer version: it is not ours to overwrite), stops it before any write.
    """
    planned = [(_key_bytes(e, source, action), e, records.pack(e)) for e in incoming]

    def merge(txn: Txn) -> tuple[list[bytes], list[str], dict[str, int]]:
        """Decided in the transaction that writes: a proxy's recording cannot land between
        our look at a key and the write that would replace it with an older entry. Run again
        from scratch if the map must grow, so it only returns what it did."""
        written: list[bytes] = []
        conflicts: list[str] = []
        counts = dict.fromkeys(("added", "updated", "kept", "same"), 0)
        for raw_key, entry, packed in planned:
            current = txn.get(raw_key)
            if current is None:
                counts["added"] += 1
            elif current == packed:
                counts["same"] += 1
                continue
            else:
                stored = decode(raw_key, bytes(current))
                if stored.entry is None:
                    raise Fail(
                        f"{action}: our entry {entry.key} is corrupt ({stored.problem}): nothing"
                        f" {PAST[action]}; remove it (`recordings rm {entry.key[:12]}`) and"
                        f" {action} again"
                    )
                ours = stored.entry
                newer = entry.recorded_at > ours.recorded_at
                if ours.response != entry.response:
                    winner = "theirs" if newer else "ours"
                    request = f"{entry.request.method} {entry.request.url}"
                    conflicts.append(f"conflict {entry.key[:12]} {request}: kept {winner} (newer)")
                if not newer:
                    counts["kept"] += 1
                    continue
                counts["updated"] += 1
            if not dry_run:
                txn.put(raw_key, packed)
            written.append(raw_key)
        return written, conflicts, counts

    with open_store(cache_dir, readonly=False, create=True) as store:
        need = sum(len(raw_key) + len(packed) for raw_key, _, packed in planned)
        written, conflicts, counts = store.write(merge, need=need)
        if not dry_run:
            _note_arrivals(cache_dir, written)
    for line in conflicts:
        print(line)
    prefix = "would merge" if dry_run else "merged"
    summary = (
        f"{counts['added']} added, {counts['updated']} replaced by newer, {counts['kept']} kept,"
        f" {counts['same']} identical"
    )
    print(f"{prefix} {source}: {summary}")
    return OK


ACTIONS = {
    "ls": do_ls,
    "show": do_show,
    "verify": do_verify,
    "export": do_export,
    "misses": do_misses,
    "rm": do_rm,
    "prune": do_prune,
    "import": do_import,
    "merge": do_merge,
}


def main(args: argparse.Namespace) -> int:
    # Recorded URLs may hold undecodable bytes (as lone surrogates): shown escaped, whatever
    # the locale, rather than failing the print.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    cache_dir = Path(args.cache_dir)
    try:
        return ACTIONS[args.action](args, cache_dir)
    except StoreError as e:  # the store turns every LMDB error into one
        raise Fail(str(e)) from None
