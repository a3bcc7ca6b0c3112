"""`recordings prune` in process, on stores and usage ledgers written straight to real LMDB.

The end-to-end tests (tests/e2e/test_prune.py) make the ledger with real proxies; these pin
the rules: which runs are evidence, when an entry arrived, and what is kept for `import`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from provider_cache.cli import main as cli
from provider_cache.core import records, textform
from provider_cache.storage.store import Store
from provider_cache.storage.usage import Usage

CHAT = "https://api.openai.com/v1/chat/completions"
NOW = time.time()
DAY = 86400.0


def entry(n: int, recorded_at: float) -> records.Entry:
    return records.Entry(
        key=hashlib.sha256(b"%d" % n).hexdigest(),
        recorded_at=recorded_at,
        request=records.StoredRequest("POST", CHAT, [], b'{"n": %d}' % n),
        response=records.StoredResponse(200, "OK", [], b'{"answer": %d}' % n),
    )


def plant(cache_dir: Path, *made: records.Entry) -> None:
    with Store(cache_dir) as store:
        store.put_many([(e.key.encode(), records.pack(e)) for e in made])


def counted_run(cache_dir: Path, at: float, hits: list[records.Entry], lookups: int = 1) -> int:
    """A run in the ledger that made lookups and ended cleanly, hitting these entries."""
    usage = Usage(cache_dir)
    try:
        run = usage.begin_run(pid=1, at=at)
        usage.mark_hits({e.key: at + 1 for e in hits}, run)
        usage.end_member(run, 1, lookups)
        return run
    finally:
        usage.close()


def recordings(capsys: pytest.CaptureFixture[str], cache_dir: Path, *argv: str):
    code = cli.main(["recordings", "--cache-dir", str(cache_dir), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def keys(cache_dir: Path) -> set[str]:
    with Store(cache_dir, readonly=True) as store:
        return {k.decode() for k, _ in store.items()}


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_fewer_counted_runs_than_asked_remove_nothing_and_say_so(cache_dir, capsys):
    old = entry(1, NOW - 10 * DAY)
    plant(cache_dir, old)
    counted_run(cache_dir, NOW - 5 * DAY, [])
    counted_run(cache_dir, NOW - 4 * DAY, [], lookups=0)  # idle: not evidence
    code, out, _ = recordings(capsys, cache_dir, "prune", "--unused-runs", "2")
    assert code == 0 and keys(cache_dir) == {old.key}
    assert out == (
        "only 1 counted run of the 2 needed (2 runs in all; a run counts when it made lookups"
        " and ended cleanly): nothing is known to be unused; nothing removed\n"
    )


def test_a_store_never_run_knows_nothing_unused(cache_dir, capsys):
    plant(cache_dir, entry(1, NOW - 10 * DAY))
    code, out, _ = recordings(capsys, cache_dir, "prune", "--unused-runs", "1")
    assert code == 0 and "only 0 counted runs" in out and len(keys(cache_dir)) == 1


def test_an_entry_recorded_after_the_window_began_is_not_unused(cache_dir, capsys):
    """A teammate's entry pulled from git yesterday is not unused in last week's runs."""
    last_week, yesterday = entry(1, NOW - 9 * DAY), entry(2, NOW - DAY)
    plant(cache_dir, last_week, yesterday)
    counted_run(cache_dir, NOW - 7 * DAY, [])
    code, out, _ = recordings(capsys, cache_dir, "prune", "--unused-runs", "1")
    assert code == 0 and keys(cache_dir) == {yesterday.key}
    lines = out.splitlines()
    assert lines[0].startswith(f"removing {last_week.key[:12]}  recorded ")
    assert "  last hit never  POST " + CHAT in lines[0]
    assert lines[1].startswith("removed 1 of 2 entries not hit in the last 1 counted run (run 1)")


def test_a_hit_in_any_run_since_the_window_began_keeps_an_entry(cache_dir, capsys):
    hit_by_killed_run = entry(1, NOW - 9 * DAY)
    plant(cache_dir, hit_by_killed_run)
    counted_run(cache_dir, NOW - 8 * DAY, [])
    usage = Usage(cache_dir)
    run = usage.begin_run(pid=2, at=NOW - 7 * DAY)  # never ends: killed
    usage.mark_hits({hit_by_killed_run.key: NOW - 7 * DAY}, run)
    usage.close()
    counted_run(cache_dir, NOW - 6 * DAY, [])
    code, _, _ = recordings(capsys, cache_dir, "prune", "--unused-runs", "2")
    assert code == 0 and len(keys(cache_dir)) == 1


def test_both_criteria_must_hold(cache_dir, capsys):
    old_unused, young_unused, old_used = (
        entry(n, NOW - a * DAY) for n, a in ((1, 40), (2, 8), (3, 40))
    )
    plant(cache_dir, old_unused, young_unused, old_used)
    counted_run(cache_dir, NOW - 7 * DAY, [old_used])
    code, out, _ = recordings(
        capsys, cache_dir, "prune", "--unused-runs", "1", "--older-than", "30d", "--dry-run"
    )
    assert code == 0 and out.count("would remove ") == 1 and old_unused.key[:12] in out
    assert " and recorded before " in out.splitlines()[-1]
    assert keys(cache_dir) == {old_unused.key, young_unused.key, old_used.key}


def test_the_removed_entries_file_is_the_export_of_what_went(cache_dir, tmp_path, capsys):
    gone, kept = entry(1, NOW - 40 * DAY), entry(2, NOW)
    plant(cache_dir, gone, kept)
    target = tmp_path / "removed.json"
    code, out, _ = recordings(
        capsys, cache_dir, "prune", "--older-than", "30d", "--removed-to", str(target)
    )
    restore = f"restore them with: recordings --cache-dir {cache_dir} import {target}\n"
    assert code == 0 and out.endswith(restore)
    assert target.read_text() == textform.dumps([gone])
    assert keys(cache_dir) == {kept.key}
    code, _, err = recordings(
        capsys, cache_dir, "prune", "--older-than", "0s", "--removed-to", str(target)
    )
    assert code == 2 and err.startswith(f"{target} exists: not overwriting it")
    assert keys(cache_dir) == {kept.key}  # refused before anything was removed


def test_a_removed_entries_file_that_cannot_be_written_removes_nothing(cache_dir, tmp_path, capsys):
    plant(cache_dir, entry(1, NOW - 2 * DAY))
    target = tmp_path / ("x" * 250)  # a valid name, but its temporary file's is too long
    code, out, err = recordings(
        capsys, cache_dir, "prune", "--older-than", "1d", "--removed-to", str(target)
    )
    assert (code, out) == (2, "") and err == f"cannot write {target}: File name too long\n"
    assert len(keys(cache_dir)) == 1 and not target.exists()
    assert sorted(tmp_path.glob("*x*")) == []  # and no temporary file is left


def test_default_files_in_the_cache_dir_never_overwrite_each_other(cache_dir, capsys):
    plant(cache_dir, entry(1, NOW - 2 * DAY), entry(2, NOW - DAY))
    assert recordings(capsys, cache_dir, "prune", "--older-than", "36h")[0] == 0
    assert recordings(capsys, cache_dir, "prune", "--older-than", "12h")[0] == 0
    files = sorted(cache_dir.glob("pruned-*.json"))
    assert len(files) == 2  # even within one second
    assert sum(len(json.loads(f.read_text())["entries"]) for f in files) == 2
    assert "pruned-*.json" in (cache_dir / ".gitignore").read_text()


def test_corrupt_entries_are_never_pruned(cache_dir, capsys):
    plant(cache_dir, entry(1, NOW - 40 * DAY))
    with Store(cache_dir) as store:
        store.put(b"c" * 64, b"garbage")
    code, out, _ = recordings(capsys, cache_dir, "prune", "--older-than", "1d")
    assert code == 0 and keys(cache_dir) == {"c" * 64}
    assert "removed 1 of 2 entries" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "prune: give --unused-runs N, --older-than AGE, or both"),
        (["--unused-runs", "0"], "--unused-runs must be at least 1"),
        (["--older-than", "30"], "not an age: '30'"),
        (["--older-than=-1d"], "must be 0 or more"),
        (["--older-than", "1y"], "not an age: '1y'"),
    ],
)
def test_bad_prune_arguments_are_one_line_and_exit_2(cache_dir, capsys, argv, message):
    plant(cache_dir, entry(1, NOW))
    code, out, err = recordings(capsys, cache_dir, "prune", *argv)
    assert (code, out) == (2, "") and message in err and err.count("\n") == 1
    assert len(keys(cache_dir)) == 1


def test_import_stamps_arrivals_so_restored_entries_are_not_pruned_again(
    cache_dir, tmp_path, capsys
):
    old = entry(1, NOW - 40 * DAY)
    plant(cache_dir, old)
    counted_run(cache_dir, NOW - 7 * DAY, [])
    target = tmp_path / "removed.json"
    recordings(capsys, cache_dir, "prune", "--unused-runs", "1", "--removed-to", str(target))
    assert keys(cache_dir) == set()
    assert recordings(capsys, cache_dir, "import", str(target))[0] == 0
    code, out, _ = recordings(capsys, cache_dir, "prune", "--unused-runs", "1")
    assert code == 0 and keys(cache_dir) == {old.key} and "0 of 1 entries" in out
