"""`recordings ls` and `show` in process, on stores written straight to real LMDB: the error
marks of entries recorded on purpose (SPEC §4) and of error answers imported from elsewhere.

The end-to-end tests (tests/e2e/test_recordings_script.py) run them on recorded stores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from provider_cache.cli import main as cli
from provider_cache.core import records, timefmt
from provider_cache.core.errormark import error_of, recorded_on_purpose
from provider_cache.storage.store import Store

CHAT = "https://api.openai.com/v1/chat/completions"
AT = 1_735_787_045.0  # 2025-01-02 03:04:05 UTC


def entry(
    n: int, status: int = 200, meta: dict | None = None, chunks: list[bytes] | None = None
) -> records.Entry:
    body = b"".join(chunks) if chunks is not None else b'{"answer": %d}' % n
    return records.Entry(
        key=hashlib.sha256(b"%d" % n).hexdigest(),
        recorded_at=AT,
        request=records.StoredRequest("POST", CHAT, [], b'{"n": %d}' % n),
        response=records.StoredResponse(status, "X", [], body, chunks),
        meta={"recorded_run": 3, **(meta or {})},
    )


OK_ENTRY = entry(1)
STATUS_ON_PURPOSE = entry(2, 429, {"error": "error_status"})
STREAM_ON_PURPOSE = entry(
    3, 200, {"error": "stream_error"}, [b'data: {"x": 1}\n\n', b"event: error\ndata: {}\n\n"]
)
IMPORTED_ERROR = entry(4, 503)


def plant(cache_dir: Path, *made: records.Entry) -> None:
    with Store(cache_dir) as store:
        store.put_many([(e.key.encode(), records.pack(e)) for e in made])


def recordings(capsys: pytest.CaptureFixture[str], cache_dir: Path, *argv: str):
    code = cli.main(["recordings", "--cache-dir", str(cache_dir), *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store(tmp_path: Path) -> Path:
    cache_dir = tmp_path / "cache"
    plant(cache_dir, OK_ENTRY, STATUS_ON_PURPOSE, STREAM_ON_PURPOSE, IMPORTED_ERROR)
    return cache_dir


def line_of(out: str, e: records.Entry) -> str:
    return next(line for line in out.splitlines() if line.startswith(e.key[:12]))


# --- the rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "status", "expected"),
    [
        ({}, 200, None),
        ({}, 399, None),
        ({}, 400, "error_status"),
        ({}, 503, "error_status"),
        ({"error": "stream_error"}, 200, "stream_error"),
        ({"error": "error_status"}, 429, "error_status"),
        ({"error": ""}, 200, None),
        ({"error": None}, 500, "error_status"),
        ({"error": 1}, 200, "error_status"),  # a foreign note that is no reason: still an error
        ({"recorded_run": 2}, None, None),
    ],
)
def test_error_of(meta: dict, status: int | None, expected: str | None) -> None:
    assert error_of(meta, status) == expected


def test_recorded_on_purpose_is_the_note_of_the_proxy() -> None:
    assert recorded_on_purpose(STREAM_ON_PURPOSE.meta)
    assert not recorded_on_purpose(IMPORTED_ERROR.meta)


# --- ls ---------------------------------------------------------------------------------------


def test_ls_marks_each_error_entry_with_its_reason(store, capsys):
    code, out, _ = recordings(capsys, store, "ls")
    assert code == 0
    stamp = timefmt.stamp(AT)
    assert line_of(out, STATUS_ON_PURPOSE) == (
        f"{STATUS_ON_PURPOSE.key[:12]}  429    13B error:error_status  recorded {stamp}"
        f"  last hit never  POST {CHAT}"
    )
    assert f" sse:2 error:stream_error  recorded {stamp}" in line_of(out, STREAM_ON_PURPOSE)
    assert "  503    13B error:error_status  " in line_of(out, IMPORTED_ERROR)
    assert "error" not in line_of(out, OK_ENTRY)
    assert out.splitlines()[-1] == "4 entries, 3 errors"


def test_ls_of_a_store_without_errors_says_only_how_many(tmp_path, capsys):
    plant(tmp_path / "c", OK_ENTRY)
    _, out, _ = recordings(capsys, tmp_path / "c", "ls")
    assert out.splitlines()[-1] == "1 entries"
    plant(tmp_path / "d", OK_ENTRY, IMPORTED_ERROR)
    _, out, _ = recordings(capsys, tmp_path / "d", "ls")
    assert out.splitlines()[-1] == "2 entries, 1 error"


def test_ls_counts_errors_and_corrupt_entries_apart(store, capsys):
    with Store(store) as db:
        db.put(b"f" * 64, b"\x92\x01")  # a msgpack list, not an entry
    _, out, _ = recordings(capsys, store, "ls")
    assert out.splitlines()[-1] == "5 entries, 3 errors, 1 corrupt"


def test_ls_json_names_the_error_or_null(store, capsys):
    _, out, _ = recordings(capsys, store, "ls", "--json")
    errors = {row["key"]: row["error"] for row in map(json.loads, out.splitlines())}
    assert errors == {
        OK_ENTRY.key: None,
        STATUS_ON_PURPOSE.key: "error_status",
        STREAM_ON_PURPOSE.key: "stream_error",
        IMPORTED_ERROR.key: "error_status",
    }


# --- show -------------------------------------------------------------------------------------


def shown(capsys, store: Path, e: records.Entry) -> list[str]:
    code, out, _ = recordings(capsys, store, "show", e.key[:12])
    assert code == 0
    return out.splitlines()


def test_show_says_an_entry_was_recorded_as_an_error_on_purpose(store, capsys):
    lines = shown(capsys, store, STREAM_ON_PURPOSE)
    assert lines[2] == (
        "error     stream_error: recorded on purpose (cache_record_errors); replayed as this error"
    )
    assert "event: error" in "\n".join(lines)


def test_show_marks_an_imported_error_status(store, capsys):
    lines = shown(capsys, store, IMPORTED_ERROR)
    assert lines[2] == "error     error_status: status 503; replayed as this error"
    assert "503 X" in lines


def test_show_of_a_success_has_no_error_line(store, capsys):
    lines = shown(capsys, store, OK_ENTRY)
    assert not any(line.startswith("error") for line in lines)
    assert lines[2] == ""  # the blank line before the request, as before


# --- sequence slots (cache_sequence) ----------------------------------------------------------


def sequence_of(n: int, answers: int) -> list[records.Entry]:
    """Entry n and its slots 2..answers, each with its own answer."""
    from provider_cache.core import slots

    first = entry(n)
    later = [
        slots.as_slot(
            records.Entry(**{**vars(entry(100 * n + i)), "request": first.request}), first.key, i
        )
        for i in range(2, answers + 1)
    ]
    return [first, *later]


def test_ls_shows_each_slot_after_its_first(tmp_path, capsys):
    seq = sequence_of(7, 3)
    plant(tmp_path / "c", OK_ENTRY, *seq)
    _, out, _ = recordings(capsys, tmp_path / "c", "ls")
    lines = out.splitlines()
    mine = [line for line in lines if " slot:" in line]
    assert [line[:12] for line in mine] == [e.key[:12] for e in seq]  # in slot order
    assert [line.split()[3] for line in mine] == ["slot:1/3", "slot:2/3", "slot:3/3"]
    assert "slot:" not in line_of(out, OK_ENTRY)
    assert lines[-1] == "4 entries"
    _, out, _ = recordings(capsys, tmp_path / "c", "ls", "--json")
    rows = {row["key"]: row for row in map(json.loads, out.splitlines())}
    assert [(rows[e.key]["slot"], rows[e.key]["slots"]) for e in seq] == [(1, 3), (2, 3), (3, 3)]
    assert {rows[e.key]["slot_of"] for e in seq} == {seq[0].key}
    assert (rows[OK_ENTRY.key]["slot"], rows[OK_ENTRY.key]["slots"]) == (1, 1)


def test_show_of_the_first_slot_shows_every_slot(tmp_path, capsys):
    seq = sequence_of(7, 3)
    plant(tmp_path / "c", *seq)
    lines = shown(capsys, tmp_path / "c", seq[0])
    assert lines[1] == f"slot      1 of 3 of key {seq[0].key} (cache_sequence)"
    text = "\n".join(lines)
    assert f"=== slot 2 of 3: key {seq[1].key}" in text
    assert f"=== slot 3 of 3: key {seq[2].key}" in text
    assert '"answer": 7' in text and '"answer": 702' in text and '"answer": 703' in text


def test_show_of_a_later_slot_shows_it_alone(tmp_path, capsys):
    seq = sequence_of(7, 3)
    plant(tmp_path / "c", *seq)
    lines = shown(capsys, tmp_path / "c", seq[1])
    assert lines[1] == f"slot      2 of 3 of key {seq[0].key} (cache_sequence)"
    assert "=== slot" not in "\n".join(lines) and '"answer": 702' in "\n".join(lines)


def test_rm_of_the_first_slot_takes_the_sequence_with_it(tmp_path, capsys):
    seq = sequence_of(7, 3)
    plant(tmp_path / "c", OK_ENTRY, *seq)
    code, out, _ = recordings(capsys, tmp_path / "c", "rm", seq[0].key[:12])
    assert code == 0 and len(out.splitlines()) == 3
    with Store(tmp_path / "c", readonly=True) as store:
        assert [k for k, _ in store.items()] == [OK_ENTRY.key.encode()]


def test_rm_of_a_later_slot_removes_only_it(tmp_path, capsys):
    seq = sequence_of(7, 3)
    plant(tmp_path / "c", *seq)
    recordings(capsys, tmp_path / "c", "rm", seq[2].key[:12])
    with Store(tmp_path / "c", readonly=True) as store:
        assert sorted(k for k, _ in store.items()) == sorted(e.key.encode() for e in seq[:2])
