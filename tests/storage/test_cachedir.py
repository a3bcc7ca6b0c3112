"""The cache directory's .gitignore: `git add recordings/` must pick only the recordings."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from provider_cache.storage.cachedir import (
    DATA_FILE,
    GITIGNORE,
    LOCK_FILE,
    REBUILD_STATE,
    STATS_FILE,
    USAGE_DIR,
    ensure_gitignore,
)


def patterns() -> list[str]:
    return [ln for ln in GITIGNORE.splitlines() if ln.strip() and not ln.startswith("#")]


def ignored(name: str) -> bool:
    """Whether a top-level name of the cache directory is ignored (these simple patterns)."""
    return any(fnmatch.fnmatchcase(name, p.rstrip("/")) for p in patterns())


def test_gitignore_is_written_into_the_cache_dir(tmp_path: Path) -> None:
    ensure_gitignore(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == GITIGNORE


@pytest.mark.parametrize(
    "name",
    [
        LOCK_FILE,
        USAGE_DIR,
        STATS_FILE,
        REBUILD_STATE,
        ".stats.json.abc123.tmp",
        "pruned-20260102T030405Z.json",  # what prune removed (issue 12)
        "pruned-20260102T030405Z-2.json",
    ],
)
def test_per_machine_files_are_ignored(name: str) -> None:
    assert ignored(name)


def test_the_recordings_are_not_ignored() -> None:
    assert not ignored(DATA_FILE)
    assert DATA_FILE in GITIGNORE.splitlines()[0]  # the comment says to commit them


def test_usage_is_ignored_as_a_directory() -> None:
    assert f"{USAGE_DIR}/" in patterns()


def test_an_existing_gitignore_is_never_overwritten(tmp_path: Path) -> None:
    """The user may have edited it."""
    path = tmp_path / ".gitignore"
    path.write_text("# mine\n*.mdb\n")
    ensure_gitignore(tmp_path)
    assert path.read_text() == "# mine\n*.mdb\n"


def test_writing_twice_leaves_one_copy(tmp_path: Path) -> None:
    ensure_gitignore(tmp_path)
    ensure_gitignore(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == GITIGNORE
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitignore", "tmp"]


def test_an_empty_gitignore_counts_as_written(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("")
    ensure_gitignore(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == ""


def test_a_gitignore_an_older_version_wrote_gains_the_new_patterns(tmp_path: Path) -> None:
    path = tmp_path / ".gitignore"
    old = "\n".join(line for line in GITIGNORE.splitlines() if ".d/" not in line) + "\n*.bak\n"
    path.write_text(old)
    ensure_gitignore(tmp_path)
    assert path.read_text() == old + f"{STATS_FILE}.d/\n"
    assert ignored(f"{STATS_FILE}.d")


def test_the_checkouts_recordings_gitignore_is_the_current_one() -> None:
    """`./dev proxy` records into the checkout's recordings/: its committed .gitignore must
    already be what the proxy would write, or the first run leaves a change in `git status`."""
    checkout = Path(__file__).resolve().parents[2] / "recordings" / ".gitignore"
    assert checkout.read_text() == GITIGNORE
