"""Atomic writes (the stats file, exports, backoff state): a reader never sees half a file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from provider_cache.storage.atomic import write_atomically, write_atomically_bytes

DOCUMENT = {"schema": 1, "hits": 2, "misses": 1, "hit_rate": 2 / 3, "mode": "replay"}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_the_document_as_indented_json(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    write_atomically(path, DOCUMENT)
    text = path.read_text()
    assert json.loads(text) == DOCUMENT
    assert text == json.dumps(DOCUMENT, indent=2) + "\n"


def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "stats.json"
    write_atomically(path, DOCUMENT)
    assert json.loads(path.read_text()) == DOCUMENT


def test_replaces_the_file_by_renaming_a_new_one_over_it(tmp_path: Path) -> None:
    """A reader that opened the old file still reads all of the old one."""
    path = tmp_path / "stats.json"
    write_atomically(path, {"hits": 1})
    old_inode = path.stat().st_ino
    with path.open() as reader:
        write_atomically(path, {"hits": 2})
        assert json.loads(reader.read()) == {"hits": 1}
    assert path.stat().st_ino != old_inode
    assert json.loads(path.read_text()) == {"hits": 2}
    assert leftovers(tmp_path) == []


def test_bytes_are_written_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    write_atomically_bytes(path, b"\x00\xff raw\n")
    assert path.read_bytes() == b"\x00\xff raw\n"


def test_a_document_that_is_not_json_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    write_atomically(path, DOCUMENT)
    with pytest.raises(TypeError):
        write_atomically(path, {"when": object()})
    assert json.loads(path.read_text()) == DOCUMENT
    assert leftovers(tmp_path) == []


def test_a_failed_write_removes_its_temp_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    """The failure comes after the temporary file exists: writing text to a binary file."""
    path = tmp_path / "stats.json"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_atomically_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json", "tmp"]


def test_the_file_is_readable_by_everyone(tmp_path: Path) -> None:
    """mkstemp makes 0600, which would hide the stats from a CI step run as another user."""
    path = tmp_path / "stats.json"
    write_atomically(path, DOCUMENT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_mode_is_0644_whatever_the_umask_and_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text("{}")
    path.chmod(0o600)
    old = os.umask(0o077)
    try:
        write_atomically(path, DOCUMENT)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
