"""`provider-cache recordings` (scripts/recordings.py): list, show, delete, prune, export,
import, merge and verify a store (SPEC §7).

Read-only actions open LMDB read-only, so they work while a proxy is running.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from provider_cache.cli.args import BELOW_THRESHOLD, OK, Fail
from provider_cache.core import records, report, textform, timefmt
from provider_cache.core.records import Entry
from provider_cache.storage import cachedir
from provider_cache.storage.atomic import write_atomically_bytes
from provider_cache.storage.store import Store, StoreError
from provider_cache.storage.usage import LastHit, Usage

MIN_PREFIX = 6


def open_store(cache_dir: Path, *, readonly: bool) -> Store:
    if readonly and not (cache_dir / cachedir.DATA_FILE).exists():
        raise Fail(f"no recordings store in {cache_dir}")
    try:
        return Store(cache_dir, readonly=readonly)
    except StoreError as e:
        raise Fail(str(e)) from None


def entries(store: Store) -> Iterator[Entry]:
    return records.unpack_valid(store.items())


def find_key(store: Store, prefix: str) -> str:
    if len(prefix) < MIN_PREFIX:
        raise Fail(f"key prefix {prefix!r} is too short: give at least {MIN_PREFIX} characters")
    found = [k.decode() for k, _ in store.items() if k.decode().startswith(prefix)]
    if not found:
        raise Fail(f"no entry with key {prefix}")
    if len(found) > 1:
        raise Fail(f"key prefix {prefix} is ambiguous: {', '.join(k[:16] for k in found)}")
    return found[0]


def when(timestamp: float | None) -> str:
    return "-" if timestamp is None else timefmt.stamp(timestamp)


def size(n: int) -> str:
    for unit in ("B", "K", "M"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}G"


def last_used(entry: Entry, hit: LastHit | None) -> int:
    return max(int(entry.meta.get("recorded_run", 0)), hit.run if hit else 0)


# -- read-only actions ---------------------------------------------------------------------


def do_ls(args: argparse.Namespace, cache_dir: Path) -> int:
    usage = Usage.open_if_present(cache_dir)
    hits = usage.all_hits() if usage else {}
    with open_store(cache_dir, readonly=True) as store:
        rows = [e for e in entries(store) if _matches(e, args.host, args.path)]
    for e in rows:
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
        print(f"{len(rows)} entries")
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
        data = store.get(key.encode())
        if data is None:  # removed by another process since find_key saw it
            raise Fail(f"no entry with key {args.key}")
        entry = records.unpack(data)
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
    with open_store(cache_dir, readonly=True) as store:
        all_entries = list(entries(store))
    if args.format == "mitm":
        if not args.output:
            raise Fail("--format mitm needs -o FILE")
        from provider_cache.mitm.flowfile import write_flows  # needs mitmproxy: imported only here

        count = write_flows(all_entries, Path(args.output))
        print(
            f"exported {count} entries to {args.output} (open with: mitmweb --rfile {args.output})"
        )
        return OK
    text = textform.dumps(all_entries)
    if args.output:
        write_atomically_bytes(Path(args.output), text.encode())
        print(f"exported {len(all_entries)} entries to {args.output}")
    else:
        print(text, end="")
    return OK


def do_misses(args: argparse.Namespace, cache_dir: Path) -> int:
    from provider_cache.cli.gate import load_file

    stats = load_file(Path(args.stats_file) if args.stats_file else cache_dir / cachedir.STATS_FILE)
    if not stats["missed"]:
        print("no missed requests")
        return OK
    for m in stats["missed"]:
        print(f"{m['count']}x {m['method']} {m['url']}  key {m['key']}")
        for line in report.explain(m):
            print(f"    {line}")
    return OK


# -- actions that write ----------------------------------------------------------------------


def do_rm(args: argparse.Namespace, cache_dir: Path) -> int:
    with open_store(cache_dir, readonly=False) as store:
        keys = [find_key(store, prefix) for prefix in args.keys]
        for key in keys:
            store.delete(key.encode())
    _forget_usage(cache_dir, keys)
    for key in keys:
        print(f"removed {key}")
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
    if args.unused_runs < 1:
        raise Fail("--unused-runs must be at least 1")
    usage = Usage.open_if_present(cache_dir)
    if usage is None or usage.current_run() == 0:
        print("no runs recorded yet: nothing is known to be unused")
        return OK
    current, hits = usage.current_run(), usage.all_hits()
    usage.close()
    cutoff = current - args.unused_runs
    with open_store(cache_dir, readonly=args.dry_run) as store:
        stale = [e for e in entries(store) if last_used(e, hits.get(e.key)) <= cutoff]
        verb = "would remove" if args.dry_run else "removed"
        for e in stale:
            if not args.dry_run:
                store.delete(e.key.encode())
            used = last_used(e, hits.get(e.key))
            request = f"{e.request.method} {e.request.url}"
            print(f"{verb} {e.key[:12]}  last used run {used or 'never'}  {request}")
    if not args.dry_run:
        _forget_usage(cache_dir, [e.key for e in stale])
    print(
        f"{len(stale)} entries not used in the last {args.unused_runs} runs (current run {current})"
    )
    return OK


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
    return _merge_in(cache_dir, incoming, dry_run=False, source=str(path))


def do_merge(args: argparse.Namespace, cache_dir: Path) -> int:
    other = Path(args.other)
    with open_store(other, readonly=True) as store:
        incoming = list(entries(store))
    return _merge_in(cache_dir, incoming, dry_run=args.dry_run, source=str(other))


def _merge_in(cache_dir: Path, incoming: list[Entry], *, dry_run: bool, source: str) -> int:
    """Same key in both: keep the newer recording; report where the answers differ."""
    added = updated = kept = same = 0
    writes = []
    with open_store(cache_dir, readonly=False) as store:
        for entry in incoming:
            packed = records.pack(entry)
            current = store.get(entry.key.encode())
            if current is None:
                added += 1
            elif current == packed:
                same += 1
                continue
            else:
                ours = records.unpack(current)
                newer = entry.recorded_at > ours.recorded_at
                if ours.response != entry.response:
                    winner = "theirs" if newer else "ours"
                    request = f"{entry.request.method} {entry.request.url}"
                    print(f"conflict {entry.key[:12]} {request}: kept {winner} (newer)")
                if not newer:
                    kept += 1
                    continue
                updated += 1
            writes.append((entry.key.encode(), packed))
        if not dry_run:
            store.put_many(writes)
    prefix = "would merge" if dry_run else "merged"
    counts = f"{added} added, {updated} replaced by newer, {kept} kept, {same} identical"
    print(f"{prefix} {source}: {counts}")
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
    return ACTIONS[args.action](args, Path(args.cache_dir))
