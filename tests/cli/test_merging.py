"""`recordings merge` and `import` in process, on real LMDB stores: newer wins key by key, and
sequences (cache_sequence slots) keep divergent answers as slots."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from provider_cache.cli import main as cli
from provider_cache.cli import merging
from provider_cache.core import records, slots, textform
from provider_cache.storage.store import Store

CHAT = "https://api.openai.com/v1/chat/completions"
KEY = hashlib.sha256(b"the request").hexdigest()


def answer(body: bytes, at: float = 1000.0, key: str = KEY) -> records.Entry:
    return records.Entry(
        key=key,
        recorded_at=at,
        request=records.StoredRequest("POST", CHAT, [], b'{"q": 1}'),
        response=records.StoredResponse(200, "OK", [(b"date", str(at).encode())], body),
        meta={"recorded_run": 1},
    )


def sequence(*bodies: bytes, at: float = 1000.0) -> list[records.Entry]:
    return [slots.as_slot(answer(b, at), KEY, n) for n, b in enumerate(bodies, 1)]


def plant(cache_dir: Path, *made: records.Entry) -> None:
    with Store(cache_dir) as store:
        store.put_many([(e.key.encode(), records.pack(e)) for e in made])


def held(cache_dir: Path) -> dict[int, bytes]:
    """Slot → answer body of KEY's sequence in the store."""
    with Store(cache_dir, readonly=True) as store:
        found = slots.sequences(records.unpack(v) for _, v in store.items())
    return {n: e.response.body for n, e in sorted(found.get(KEY, {}).items())}


def merge(capsys, ours: Path, theirs: Path, *extra: str) -> tuple[int, str]:
    if "--slots" in extra:  # `merge --slots`, as cli/args.py is to parse it
        args = argparse.Namespace(other=str(theirs), dry_run="--dry-run" in extra, slots=True)
        code = merging.do_merge(args, ours)
    else:
        code = cli.main(["recordings", "--cache-dir", str(ours), "merge", str(theirs), *extra])
    return code, capsys.readouterr().out


def test_without_slots_the_newer_answer_wins_as_before(tmp_path, capsys):
    plant(tmp_path / "ours", answer(b"old", 1000))
    plant(tmp_path / "theirs", answer(b"new", 2000))
    code, out = merge(capsys, tmp_path / "ours", tmp_path / "theirs")
    assert code == 0 and held(tmp_path / "ours") == {1: b"new"}
    assert "1 replaced by newer" in out and "added as slots" not in out


def test_their_sequence_appends_the_answers_we_do_not_have(tmp_path, capsys):
    plant(tmp_path / "ours", *sequence(b"a", b"b"))
    plant(tmp_path / "theirs", *sequence(b"a", b"c", b"b", b"d", at=2000))
    code, out = merge(capsys, tmp_path / "ours", tmp_path / "theirs")
    assert code == 0
    assert held(tmp_path / "ours") == {1: b"a", 2: b"b", 3: b"c", 4: b"d"}
    assert f"slot {KEY[:12]} POST {CHAT}: their answer 2 kept as slot 3" in out
    assert out.splitlines()[-1].endswith("2 identical, 2 added as slots")


def test_our_sequence_keeps_a_divergent_single_answer_as_a_slot(tmp_path, capsys):
    plant(tmp_path / "ours", *sequence(b"a", b"b"))
    plant(tmp_path / "theirs", answer(b"z", 2000))
    merge(capsys, tmp_path / "ours", tmp_path / "theirs")
    assert held(tmp_path / "ours") == {1: b"a", 2: b"b", 3: b"z"}


def test_slots_flag_keeps_divergent_answers_of_keys_without_slots(tmp_path, capsys):
    plant(tmp_path / "ours", answer(b"old", 1000))
    plant(tmp_path / "theirs", answer(b"new", 2000))
    _, out = merge(capsys, tmp_path / "ours", tmp_path / "theirs", "--slots")
    assert held(tmp_path / "ours") == {1: b"old", 2: b"new"}
    assert "1 added as slots" in out


def test_a_sequence_into_an_empty_store_is_copied_as_it_is(tmp_path, capsys):
    plant(tmp_path / "theirs", *sequence(b"a", b"b", b"c"))
    merge(capsys, tmp_path / "ours", tmp_path / "theirs")
    assert held(tmp_path / "ours") == {1: b"a", 2: b"b", 3: b"c"}


def test_dry_run_writes_no_slot(tmp_path, capsys):
    plant(tmp_path / "ours", *sequence(b"a"))
    plant(tmp_path / "theirs", *sequence(b"a", b"b"))
    _, out = merge(capsys, tmp_path / "ours", tmp_path / "theirs", "--dry-run")
    assert out.splitlines()[-1].startswith("would merge") and "1 added as slots" in out
    assert held(tmp_path / "ours") == {1: b"a"}


def test_merging_a_store_into_a_copy_of_itself_changes_nothing(tmp_path, capsys):
    plant(tmp_path / "ours", *sequence(b"a", b"b"))
    plant(tmp_path / "theirs", *sequence(b"a", b"b"))
    _, out = merge(capsys, tmp_path / "ours", tmp_path / "theirs")
    assert held(tmp_path / "ours") == {1: b"a", 2: b"b"} and "added as slots" not in out


def test_export_then_import_keeps_the_slots(tmp_path, capsys):
    plant(tmp_path / "ours", *sequence(b"a", b"b", b"c"))
    export = tmp_path / "export.json"
    cli.main(["recordings", "--cache-dir", str(tmp_path / "ours"), "export", "-o", str(export)])
    cli.main(["recordings", "--cache-dir", str(tmp_path / "new"), "import", str(export)])
    capsys.readouterr()
    assert held(tmp_path / "new") == {1: b"a", 2: b"b", 3: b"c"}
    with Store(tmp_path / "ours", readonly=True) as a, Store(tmp_path / "new", readonly=True) as b:
        assert list(a.items()) == list(b.items())  # byte for byte
    assert [slots.position(e)[1] for e in textform.loads(export.read_text())] == [1, 2, 3]


@pytest.mark.parametrize("flag", [[], ["--slots"]])
def test_unrelated_keys_are_added_either_way(tmp_path, capsys, flag):
    other = answer(b"x", key=hashlib.sha256(b"other").hexdigest())
    plant(tmp_path / "ours", *sequence(b"a"))
    plant(tmp_path / "theirs", other)
    merge(capsys, tmp_path / "ours", tmp_path / "theirs", *flag)
    with Store(tmp_path / "ours", readonly=True) as store:
        assert store.get(other.key.encode()) is not None
