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
import importlib
import json
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from provider_cache.cli.args import BELOW_THRESHOLD, OK, Fail
from provider_cache.cli.merging import do_import, do_merge
from provider_cache.cli.prune import do_prune
from provider_cache.cli.storeview import (
    decode,
    entries,
    find_key,
    forget_usage,
    in_sequence_order,
    open_store,
    scan,
    shown_key,
    size,
    skipped_corrupt,
    slot_counts,
    when,
    writing,
)
from provider_cache.core import errormark, records, report, slots, textform, wsrecords
from provider_cache.core.records import Entry
from provider_cache.storage import cachedir
from provider_cache.storage.atomic import write_atomically_bytes
from provider_cache.storage.store import StoreError
from provider_cache.storage.usage import LastHit, Usage

# -- read-only actions ---------------------------------------------------------------------


def do_ls(args: argparse.Namespace, cache_dir: Path) -> int:
    usage = Usage.open_if_present(cache_dir)
    hits = usage.all_hits() if usage else {}
    with open_store(cache_dir, readonly=True) as store:
        # A filter cannot rule a corrupt entry out (nothing of it is known): always listed.
        rows = [r for r in scan(store) if not r.entry or _matches(r.entry, args.host, args.path)]
    errors, lengths = 0, slot_counts(rows)
    for row in in_sequence_order(rows):
        if row.entry is None:
            if args.json:
                print(json.dumps({"key": row.key, "corrupt": row.problem}))
            else:
                print(f"{row.key[:12]}  corrupt: {row.problem}")
            continue
        e = row.entry
        hit = hits.get(e.key)
        of, n = slots.position(e)
        length = lengths.get(of, 1)
        if args.json:
            print(json.dumps(_summary(e, hit) | {"slot_of": of, "slot": n, "slots": length}))
            continue
        streamed = _streamed(e)
        streamed += f" slot:{n}/{length}" if length > 1 else ""
        error = errormark.error_of(e.meta, e.response.status)
        errors += error is not None
        marked = f" error:{error}" if error else ""
        last = f"run {hit.run} {when(hit.at)}" if hit else "never"
        print(
            f"{e.key[:12]}  {e.response.status}  {size(len(e.response.content)):>5}{streamed}"
            f"{marked}  recorded {when(e.recorded_at)}  last hit {last}  "
            f"{e.request.method} {e.request.url}"
        )
    if not args.json:
        corrupt = len(rows) - len(entries(rows))
        print(
            f"{len(rows)} entries"
            + (f", {errors} error{'' if errors == 1 else 's'}" if errors else "")
            + (f", {corrupt} corrupt" if corrupt else "")
        )
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
        "error": errormark.error_of(entry.meta, entry.response.status),
        "last_hit_run": hit.run if hit else None,
        "last_hit_at": hit.at if hit else None,
    }


def do_show(args: argparse.Namespace, cache_dir: Path) -> int:
    with open_store(cache_dir, readonly=True) as store:
        key = find_key(store, args.key)
        data = store.get(key)
        if data is None:  # removed by another process since find_key saw it
            raise Fail(f"no entry with key {args.key}")
        rows = scan(store)
    stored = decode(key, data)
    if stored.entry is None:
        raise Fail(
            f"entry {stored.key} is corrupt ({stored.problem}): `recordings verify` lists every"
            f" bad entry, `recordings rm {stored.key[:12]}` removes this one"
        )
    entry = stored.entry
    req, resp = entry.request, entry.response
    of, n = slots.position(entry)
    sequence = slots.sequences(entries(rows)).get(of, {})
    print(f"key       {entry.key}")
    if len(sequence) > 1 or n > 1:
        print(f"slot      {n} of {max(sequence, default=n)} of key {of} (cache_sequence)")
    print(f"recorded  {when(entry.recorded_at)} UTC (run {entry.meta.get('recorded_run', '?')})")
    error = errormark.error_of(entry.meta, resp.status)
    if error is not None:
        why = (
            "recorded on purpose (cache_record_errors)"
            if errormark.recorded_on_purpose(entry.meta)
            else f"status {resp.status}"
        )
        print(f"error     {error}: {why}; replayed as this error")
    print(f"\n{req.method} {req.url}")
    print(_headers(req.headers) + "\n\n" + _body(req.body))
    if not _show_session(entry):
        _show_response(resp)
    if n == 1:  # the first slot shows the whole sequence; a later one, itself
        for later, slot in sorted(sequence.items()):
            if later > 1:
                print(f"\n=== slot {later} of {max(sequence)}: key {slot.key}")
                print(f"recorded  {when(slot.recorded_at)} UTC")
                _show_response(slot.response)
    return OK


def _streamed(entry: records.Entry) -> str:
    """`sse:N` (a stream's chunks), or `websocket:N` (a session's messages, and its
    conversations when there are several)."""
    if wsrecords.is_session(entry):
        try:
            takes = wsrecords.session_of(entry).takes
        except records.CorruptEntry:
            return " websocket:?"
        messages = sum(len(take.messages) for take in takes)
        return f" websocket:{messages}" + (f" takes:{len(takes)}" if len(takes) > 1 else "")
    chunks = entry.response.chunks
    return f" sse:{len(chunks)}" if chunks is not None else ""


def _show_session(entry: records.Entry) -> bool:
    """A WebSocket session: the handshake's answer, then each conversation's messages with
    their direction (→ from the client, ← from the server), kind and offset."""
    if not wsrecords.is_session(entry):
        return False
    try:
        session = wsrecords.session_of(entry)
    except records.CorruptEntry:
        return False
    resp = entry.response
    print(f"\n{resp.status} {resp.reason}")
    print(_headers(resp.headers))
    for number, take in enumerate(session.takes, 1):
        close = f"closed {take.close_code}" + (f" {take.close_reason}" if take.close_reason else "")
        print(f"\n=== WebSocket conversation {number} ({len(take.messages)} messages, {close})")
        for message in take.messages:
            kind = "text" if message.text else "binary"
            arrow = "→" if message.from_client else "←"
            print(f"--- {arrow} {kind} at {message.offset:.3f}s, {size(len(message.content))}")
            content = message.content
            print(_body(content), end="" if content.endswith(b"\n") else "\n")
    return True


def _show_response(resp: records.StoredResponse) -> None:
    print(f"\n{resp.status} {resp.reason}")
    print(_headers(resp.headers) + "\n")
    if resp.chunks is None:
        print(_body(resp.body))
    else:
        print(f"(streamed: {len(resp.chunks)} chunks, {len(resp.content)} bytes)")
        for i, chunk in enumerate(resp.chunks, 1):
            print(f"--- chunk {i}\n{_body(chunk)}", end="" if chunk.endswith(b"\n") else "\n")


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

        count = writing(output, lambda: write_flows(good, output))
        print(f"exported {count} entries to {output} (open with: mitmweb --rfile {output})")
    else:
        writing(output, lambda: write_atomically_bytes(output, textform.dumps(good).encode()))
        print(f"exported {len(good)} entries to {output}")
    return skipped_corrupt("export", rows, cache_dir)


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
    """The entries named; the first slot of a sequence takes its later slots with it."""
    with open_store(cache_dir, readonly=False) as store:
        keys = [find_key(store, prefix) for prefix in args.keys]
        sequences = slots.sequences(entries(scan(store)))
        later = [
            slot.key.encode()
            for key in keys
            for n, slot in sorted(sequences.get(shown_key(key), {}).items())
            if n > 1
        ]
        keys = list(dict.fromkeys(keys + later))
        for key in keys:
            store.delete(key)
    shown = [shown_key(k) for k in keys]
    forget_usage(cache_dir, shown)
    for name in shown:
        print(f"removed {name}")
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


#: The remote tier's actions, imported only when asked for (they bring boto3).
REMOTE_ACTIONS = {
    "push": ("remote", "do_push"),
    "pull": ("remote", "do_pull"),
    "sync": ("remote", "do_sync"),
    "remote-rm": ("remote", "do_remote_rm"),
    "manifest": ("manifests", "do_manifest"),
    "gc": ("manifests", "do_gc"),
}


def _remote(args: argparse.Namespace, cache_dir: Path) -> int:
    module, function = REMOTE_ACTIONS[args.action]
    action = getattr(importlib.import_module(f"provider_cache.cli.{module}"), function)
    return action(args, cache_dir)


ACTIONS |= dict.fromkeys(REMOTE_ACTIONS, _remote)


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
