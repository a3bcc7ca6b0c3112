"""`recordings import` and `merge`: entries from an export, a flow file or another store,
added all or nothing; the same key in both keeps the newer recording.

Sequences (core/slots.py, cache_sequence): a key that has slots on either side, or every key
with `--slots`, is merged as a sequence instead: ours stay where they are, and each answer of
theirs that none of ours gives (same status and body) is appended as a further slot, in
their order. Without slots on either side nothing changes: the newer recording wins.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from provider_cache.cli.args import OK, Fail
from provider_cache.cli.storeview import (
    MAX_KEY_BYTES,
    PAST,
    decode,
    entries,
    has_store,
    open_store,
    scan,
    shown_key,
    skipped_corrupt,
    stamp_arrivals,
)
from provider_cache.core import records, slots, textform
from provider_cache.core.records import Entry
from provider_cache.storage.store import Txn


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
    slotted = getattr(args, "slots", False)
    return _merge_in(
        cache_dir, incoming, dry_run=False, source=str(path), action="import", slotted=slotted
    )


def do_merge(args: argparse.Namespace, cache_dir: Path) -> int:
    other = Path(args.other)
    with open_store(other, readonly=True) as store:
        rows = scan(store)
    code = _merge_in(
        cache_dir,
        entries(rows),
        dry_run=args.dry_run,
        source=str(other),
        action="merge",
        slotted=getattr(args, "slots", False),  # `merge --slots`: every key as a sequence
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


def _as_sequences(
    ours: list[Entry], incoming: list[Entry], slotted: bool
) -> tuple[list[Entry], list[Entry], list[str], int]:
    """Incoming entries split: those merged key by key (newer wins), the answers that join a
    sequence as new slots (already placed) with a line for each, and how many we had."""
    theirs = slots.sequences(incoming)
    mine = slots.sequences(ours)
    plain: list[Entry] = []
    appended: list[Entry] = []
    lines: list[str] = []
    same = 0
    for key, group in theirs.items():
        held = mine.get(key, {})
        if not held or not (slotted or max(group) > 1 or max(held) > 1):
            plain += group.values()  # nothing of ours, or no sequence: key by key
            continue
        answers = list(held.values())
        last = max(held)
        for n, entry in sorted(group.items()):
            if any(slots.same_answer(entry, known) for known in answers):
                same += 1
                continue
            last += 1
            placed = slots.as_slot(entry, key, last)
            appended.append(placed)
            answers.append(placed)
            request = f"{entry.request.method} {entry.request.url}"
            lines.append(f"slot {key[:12]} {request}: their answer {n} kept as slot {last}")
    return plain, appended, lines, same


def _merge_in(
    cache_dir: Path,
    incoming: list[Entry],
    *,
    dry_run: bool,
    source: str,
    action: str,
    slotted: bool = False,
) -> int:
    """Same key in both: keep the newer recording; report where the answers differ. A
    sequence on either side (or `slotted`): divergent answers become slots.

    All or nothing: a key LMDB cannot hold, or a corrupt entry of ours under an incoming key
    (perhaps written by a newer version: it is not ours to overwrite), stops it before any write.
    """
    appended: list[Entry] = []
    slot_lines: list[str] = []
    known_answers = 0
    if has_store(cache_dir):  # which keys have slots here, and their answers
        with open_store(cache_dir, readonly=True) as store:
            ours = entries(scan(store))
        incoming, appended, slot_lines, known_answers = _as_sequences(ours, incoming, slotted)
    planned = [(_key_bytes(e, source, action), e, records.pack(e)) for e in incoming]
    new_slots = [(_key_bytes(e, source, action), records.pack(e)) for e in appended]

    def merge(txn: Txn) -> tuple[list[bytes], list[str], dict[str, int]]:
        """Decided in the transaction that writes: a proxy's recording cannot land between
        our look at a key and the write that would replace it with an older entry. Run again
        from scratch if the map must grow, so it only returns what it did."""
        written: list[bytes] = []
        conflicts: list[str] = []
        counts = dict.fromkeys(("added", "updated", "kept", "same", "slots"), 0)
        for raw_key, packed in new_slots:
            if txn.get(raw_key) is not None:  # a proxy recorded that slot since we looked
                raise Fail(
                    f"{action}: the store changed while merging (slot {shown_key(raw_key)[:12]}"
                    f" was recorded meanwhile): nothing {PAST[action]}; {action} again"
                )
            counts["slots"] += 1
            if not dry_run:
                txn.put(raw_key, packed)
            written.append(raw_key)
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
        need += sum(len(raw_key) + len(packed) for raw_key, packed in new_slots)
        written, conflicts, counts = store.write(merge, need=need)
        counts["same"] += known_answers
        if not dry_run:
            stamp_arrivals(cache_dir, written)
    for line in slot_lines + conflicts:
        print(line)
    prefix = "would merge" if dry_run else "merged"
    summary = (
        f"{counts['added']} added, {counts['updated']} replaced by newer, {counts['kept']} kept,"
        f" {counts['same']} identical"
        + (f", {counts['slots']} added as slots" if counts["slots"] else "")
    )
    print(f"{prefix} {source}: {summary}")
    return OK
