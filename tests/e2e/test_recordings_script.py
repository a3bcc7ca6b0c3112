"""scripts/recordings.py on stores recorded through real mitmdump (SPEC §7)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mitmproxy import io

from provider_cache.core import records
from provider_cache.storage.store import Store
from tests.support.proxy import ROOT_DIR

SCRIPT = ROOT_DIR / "scripts" / "recordings.py"
CHAT = "https://api.openai.com/v1/chat/completions"


def recordings(cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--cache-dir", str(cache_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ask(*contents: str, stream: bool = False) -> list[str]:
    """x-provider-cache of each chat completion, through the proxy in the environment."""
    with httpx.Client(timeout=30, headers={"authorization": "Bearer sk-test-recordings-0001"}) as c:
        return [
            c.post(
                CHAT,
                json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": x}]},
            ).headers["x-provider-cache"]
            for x in contents
        ]


@pytest.fixture
def recorded(start_proxy, use_proxy, fake, cache_dir) -> Path:
    proxy = start_proxy("record")
    use_proxy(proxy)
    ask("alpha", "beta")
    ask("gamma", stream=True)
    proxy.stop()
    return cache_dir


def keys_of(cache_dir: Path) -> list[str]:
    with Store(cache_dir, readonly=True) as store:
        return [k.decode() for k, _ in store.items()]


def test_ls_lists_and_filters_even_while_a_proxy_runs(recorded, start_proxy):
    start_proxy("replay")  # holds the store open meanwhile
    listing = recordings(recorded, "ls")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[-1] == "3 entries" and all(CHAT in line for line in lines[:-1])
    assert sum("sse:" in line for line in lines) == 1
    assert recordings(recorded, "ls", "--host", "api.anthropic.com").stdout == "0 entries\n"
    assert recordings(recorded, "ls", "--path", "/v1/chat/*").stdout.endswith("3 entries\n")


def test_show_prints_the_redacted_request_and_the_streamed_chunks(recorded):
    listing = recordings(recorded, "ls").stdout.splitlines()
    streamed = next(line for line in listing if "sse:" in line).split()[0]
    shown = recordings(recorded, "show", streamed)
    assert shown.returncode == 0
    assert "authorization: <redacted>" in shown.stdout and "sk-test-recordings" not in shown.stdout
    assert "(streamed:" in shown.stdout and "--- chunk 1" in shown.stdout
    assert "data: [DONE]" in shown.stdout
    for bad in ("abc", "ffffffffffff"):
        result = recordings(recorded, "show", bad)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


def test_verify_passes_then_names_a_corrupt_entry(recorded):
    assert recordings(recorded, "verify").stdout.strip() == "3 entries, 3 decode, 0 bad"
    victim = keys_of(recorded)[0]
    with Store(recorded) as store:
        store.put(victim.encode(), b"\x92\x01")  # a msgpack list, not an entry
    result = recordings(recorded, "verify")
    assert result.returncode == 1
    assert f"bad entry {victim}" in result.stdout and "1 bad" in result.stdout


def test_export_import_round_trip_is_lossless(recorded, tmp_path):
    exported = recordings(recorded, "export")
    assert exported.returncode == 0 and exported.stdout.startswith("{")
    assert recordings(recorded, "export").stdout == exported.stdout  # deterministic
    export_file = tmp_path / "export.json"
    export_file.write_text(exported.stdout)
    copy = tmp_path / "copy"
    imported = recordings(copy, "import", str(export_file))
    assert imported.returncode == 0 and "3 added" in imported.stdout
    assert recordings(copy, "export").stdout == exported.stdout
    with Store(recorded, readonly=True) as a, Store(copy, readonly=True) as b:
        assert [records.unpack(v) for _, v in a.items()] == [
            records.unpack(v) for _, v in b.items()
        ]


def test_mitm_export_opens_in_mitmproxy_and_imports_back(recorded, tmp_path):
    flow_file = tmp_path / "store.mitm"
    assert recordings(recorded, "export", "--format", "mitm", "-o", str(flow_file)).returncode == 0
    with flow_file.open("rb") as f:
        flows = list(io.FlowReader(f).stream())
    assert len(flows) == 3 and all(f.response.status_code == 200 for f in flows)
    copy = tmp_path / "from-mitm"
    assert recordings(copy, "import", str(flow_file)).returncode == 0
    assert keys_of(copy) == keys_of(recorded)


def test_merge_of_two_shards_keeps_the_newer_and_reports_conflicts(
    start_proxy, use_proxy, fake, tmp_path
):
    shard_a, shard_b = tmp_path / "a", tmp_path / "b"
    for shard, contents in ((shard_a, ("one", "two")), (shard_b, ("two", "three"))):
        proxy = start_proxy("record", cache_dir=str(shard))
        use_proxy(proxy)
        ask(*contents)  # "two" is answered twice by upstream: different ids, a conflict
        proxy.stop()
    dry = recordings(shard_a, "merge", str(shard_b), "--dry-run")
    assert "would merge" in dry.stdout and len(keys_of(shard_a)) == 2
    merged = recordings(shard_a, "merge", str(shard_b))
    assert merged.returncode == 0
    assert "1 added, 1 replaced by newer, 0 kept, 0 identical" in merged.stdout
    assert merged.stdout.count("conflict ") == 1 and "kept theirs" in merged.stdout
    assert sorted(keys_of(shard_a)) == sorted(set(keys_of(shard_b)) | set(keys_of(shard_a)))
    again = recordings(shard_a, "merge", str(shard_b))
    assert "0 added, 0 replaced by newer, 0 kept, 2 identical" in again.stdout


def test_prune_dry_run_then_real(start_proxy, use_proxy, fake, cache_dir):
    proxy = start_proxy("record")  # run 1 records both
    use_proxy(proxy)
    ask("used", "unused")
    proxy.stop()
    proxy = start_proxy("replay")  # run 2 uses one
    use_proxy(proxy)
    assert ask("used") == ["hit"]
    proxy.stop()
    dry = recordings(cache_dir, "prune", "--unused-runs", "1", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.count("would remove") == 1 and "last hit run 1" in dry.stdout
    assert len(keys_of(cache_dir)) == 2
    real = recordings(cache_dir, "prune", "--unused-runs", "1")
    assert real.stdout.count("removed") == 1 and len(keys_of(cache_dir)) == 1
    proxy = start_proxy("replay")
    use_proxy(proxy)
    assert ask("used") == ["hit"]


def test_rm_deletes_and_refuses_unknown_keys(recorded):
    victim = keys_of(recorded)[0]
    assert recordings(recorded, "rm", victim[:10]).stdout == f"removed {victim}\n"
    assert victim not in keys_of(recorded)
    missing = recordings(recorded, "rm", victim[:10])
    assert missing.returncode == 2 and "no entry with key" in missing.stderr


def test_misses_shows_the_closest_recording(recorded, start_proxy, use_proxy):
    proxy = start_proxy("replay")
    use_proxy(proxy)
    assert ask("alpha!") == ["miss"]
    proxy.stop()
    result = recordings(recorded, "misses")
    assert result.returncode == 0
    assert 'body $.messages[0].content: "alpha" → "alpha!"' in result.stdout


def test_missing_store_and_bad_files_exit_2(tmp_path):
    for args in (["ls"], ["verify"], ["import", str(tmp_path / "nope.json")]):
        result = recordings(tmp_path / "nothing-here", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, args
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"format": "something else"}')
    result = recordings(tmp_path / "c", "import", str(garbage))
    assert result.returncode == 2 and "not a provider-cache-export" in result.stderr


# --- issue 12: bad input gets one clear line, and nothing is lost ----------------------------


def planted(cache_dir: Path, count: int = 3, *, corrupt: dict[bytes, bytes] | None = None) -> list:
    """`count` valid entries written straight into a real store, plus raw (corrupt) values."""
    made = [
        records.Entry(
            key=hashlib.sha256(b"%d" % i).hexdigest(),
            recorded_at=1_800_000_000.0 + i,
            request=records.StoredRequest(
                "POST", CHAT, [(b"content-type", b"application/json")], b'{"n": %d}' % i
            ),
            response=records.StoredResponse(
                200, "OK", [(b"content-type", b"application/json")], b'{"answer": %d}' % i
            ),
        )
        for i in range(count)
    ]
    with Store(cache_dir) as store:
        store.put_many([(e.key.encode(), records.pack(e)) for e in made])
        store.put_many(list((corrupt or {}).items()))
    return made


CORRUPT_KEY = "c" * 64


def one_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_show_of_a_corrupt_entry_is_one_line_naming_the_reason(cache_dir):
    planted(cache_dir, corrupt={CORRUPT_KEY.encode(): b"garbage"})
    err = one_line(recordings(cache_dir, "show", CORRUPT_KEY[:8]), 2)
    assert err.startswith(f"entry {CORRUPT_KEY} is corrupt (undecodable entry")


def test_ls_lists_corrupt_entries_with_the_reason(cache_dir):
    planted(cache_dir, 2, corrupt={CORRUPT_KEY.encode(): b"\x92\x01\x02"})
    listing = recordings(cache_dir, "ls")
    assert listing.returncode == 0 and listing.stderr == ""
    lines = listing.stdout.splitlines()
    assert lines[-1] == "3 entries, 1 corrupt"
    assert f"{CORRUPT_KEY[:12]}  corrupt: not an entry: a msgpack list" in lines
    as_json = [
        json.loads(line) for line in recordings(cache_dir, "ls", "--json").stdout.splitlines()
    ]
    assert len(as_json) == 3
    assert {"key": CORRUPT_KEY, "corrupt": "not an entry: a msgpack list"} in as_json
    # A filter cannot rule a corrupt entry out: it is listed under every filter.
    filtered = recordings(cache_dir, "ls", "--host", "api.anthropic.com").stdout.splitlines()
    assert filtered[-1] == "1 entries, 1 corrupt"


def test_export_skips_corrupt_entries_says_so_and_exits_1(cache_dir, tmp_path):
    planted(cache_dir, 2, corrupt={CORRUPT_KEY.encode(): b"garbage"})
    exported = recordings(cache_dir, "export")
    err = one_line(exported, 1)
    assert (
        err
        == f"export: skipped 1 corrupt entry of 3 in {cache_dir} (`recordings verify` names them)\n"
    )
    document = json.loads(exported.stdout)  # stdout is still a valid export of the rest
    assert len(document["entries"]) == 2
    out = tmp_path / "export.json"
    to_file = recordings(cache_dir, "export", "-o", str(out))
    assert one_line(to_file, 1) == err and len(json.loads(out.read_text())["entries"]) == 2
    flows = tmp_path / "store.mitm"
    as_mitm = recordings(cache_dir, "export", "--format", "mitm", "-o", str(flows))
    assert one_line(as_mitm, 1) == err
    with flows.open("rb") as f:
        assert len(list(io.FlowReader(f).stream())) == 2


def test_output_cut_short_by_head_exits_quietly(cache_dir):
    planted(cache_dir, 3000)  # far more than a pipe buffer holds
    for action in (["ls"], ["ls", "--json"], ["export"]):
        reader = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--cache-dir", str(cache_dir), *action],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Unbuffered, a write the closed pipe cut short is dropped by Python's text layer
            # without an error (the command then ends 0, as quietly): test the usual case.
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )
        assert reader.stdout is not None and reader.stdout.readline()
        reader.stdout.close()  # as `| head -1` does
        _, err = reader.communicate(timeout=60)
        assert (reader.returncode, err) == (141, b""), (action, err.decode())


def test_a_key_that_is_not_utf8_neither_breaks_show_nor_rm(cache_dir):
    [entry, *_] = planted(cache_dir, 2, corrupt={b"\xff\xfe-foreign-key": b"\x00\x01"})
    shown = recordings(cache_dir, "show", entry.key[:10])
    assert shown.returncode == 0 and shown.stderr == "" and entry.key in shown.stdout
    removed = recordings(cache_dir, "rm", entry.key[:10])
    assert (removed.returncode, removed.stdout) == (0, f"removed {entry.key}\n")
    listing = recordings(cache_dir, "ls").stdout.splitlines()
    assert listing[-1] == "2 entries, 1 corrupt"
    assert any(line.startswith("\\xff\\xfe-for  corrupt") for line in listing)
    # The foreign key itself, given as the bytes it is (argv is bytes on POSIX).
    foreign = subprocess.run(
        [sys.executable, str(SCRIPT), "--cache-dir", str(cache_dir), "rm", b"\xff\xfe-foreign"],
        capture_output=True,
        timeout=60,
    )
    assert foreign.returncode == 0 and foreign.stdout == b"removed \\xff\\xfe-foreign-key\n"
    assert len(keys_of(cache_dir)) == 1


def test_merge_into_a_corrupt_entry_of_the_same_key_refuses_and_writes_nothing(cache_dir, tmp_path):
    other = tmp_path / "other"
    [entry, *_] = planted(other, 2)
    planted(cache_dir, 0, corrupt={entry.key.encode(): b"garbage"})
    merged = recordings(cache_dir, "merge", str(other))
    err = one_line(merged, 2)
    assert err.startswith(f"merge: our entry {entry.key} is corrupt (undecodable entry")
    assert "nothing merged" in err
    with Store(cache_dir, readonly=True) as store:
        assert [(k, v) for k, v in store.items()] == [(entry.key.encode(), b"garbage")]


def test_merge_from_a_store_with_corrupt_entries_merges_the_rest_and_exits_1(cache_dir, tmp_path):
    other = tmp_path / "other"
    planted(other, 2, corrupt={CORRUPT_KEY.encode(): b"garbage"})
    merged = recordings(cache_dir, "merge", str(other))
    assert one_line(merged, 1).startswith("merge: skipped 1 corrupt entry of 3")
    assert "2 added" in merged.stdout and len(keys_of(cache_dir)) == 2


@pytest.mark.parametrize("fmt", ["text", "mitm"])
def test_export_into_a_missing_directory_is_one_line(cache_dir, tmp_path, fmt):
    planted(cache_dir, 1)
    target = tmp_path / "missing" / "dir" / "export.out"
    result = recordings(cache_dir, "export", "--format", fmt, "-o", str(target))
    assert one_line(result, 2) == f"cannot write {target}: No such file or directory\n"
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("key", ["", "k" * 512], ids=["empty", "512-bytes"])
def test_import_of_a_key_lmdb_cannot_hold_is_one_line_and_imports_nothing(cache_dir, tmp_path, key):
    source = tmp_path / "source"
    planted(source, 2)
    document = json.loads(recordings(source, "export").stdout)
    document["entries"][1]["key"] = key
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(document))
    err = one_line(recordings(cache_dir, "import", str(export_file)), 2)
    assert err.startswith(f"{export_file}: entry key ") and "nothing imported" in err
    assert "1 to 511 bytes" in err
    assert not cache_dir.exists() or keys_of(cache_dir) == []


@pytest.mark.parametrize(
    "content",
    [
        '{"schema": 1, "hits": 0, "misses": 1, "recorded": 0, "passthrough": 0, "errors": 0,'
        ' "missed": [{"key": "k"}]}',
        '{"schema": 1, "hits": 0, "misses": 1, "recorded": 0, "passthrough": 0, "errors": 0,'
        ' "missed": "all of them"}',
    ],
    ids=["missed-item-without-fields", "missed-not-a-list"],
)
def test_misses_with_a_malformed_stats_file_is_one_line(tmp_path, content):
    stats = tmp_path / "stats.json"
    stats.write_text(content)
    err = one_line(recordings(tmp_path / "c", "misses", str(stats)), 2)
    assert err.startswith(f"{stats}: field 'missed")


def test_misses_of_stats_without_a_missed_list_lists_none(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(
        '{"schema": 1, "hits": 2, "misses": 0, "recorded": 0, "passthrough": 0, "errors": 0}'
    )
    result = recordings(tmp_path / "c", "misses", str(stats))
    assert (result.returncode, result.stdout, result.stderr) == (0, "no missed requests\n", "")


@pytest.mark.parametrize("action", [["rm", "abcdef12"], ["prune", "--unused-runs", "1"]])
def test_removing_from_a_mistyped_cache_dir_creates_nothing(tmp_path, action):
    mistyped = tmp_path / "recordngs"
    err = one_line(recordings(mistyped, *action), 2)
    assert err == f"no recordings store in {mistyped}\n"
    assert not mistyped.exists()


def test_undecodable_bytes_in_a_url_are_shown_and_exported_losslessly(cache_dir, tmp_path):
    """The proxy stores such bytes as lone surrogates (records.py): no print or encode of
    them may fail, whatever the locale, and export then import gives the same entry back."""
    [entry] = planted(cache_dir, 1)
    entry.request.url = CHAT + "?q=caf\udce9"
    with Store(cache_dir) as store:
        store.put(entry.key.encode(), records.pack(entry))
    strict = os.environ | {"PYTHONIOENCODING": "utf-8:strict"}

    def run(cache: Path, *args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(SCRIPT), "--cache-dir", str(cache), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=strict)

    for args in (["ls"], ["ls", "--json"], ["show", entry.key[:8]]):
        shown = run(cache_dir, *args)
        assert (shown.returncode, shown.stderr) == (0, ""), shown.stderr
        assert "caf\\udce9" in shown.stdout
    export_file = tmp_path / "export.json"
    assert run(cache_dir, "export", "-o", str(export_file)).returncode == 0
    assert export_file.read_bytes().decode("utf-8")  # valid UTF-8 throughout
    to_stdout = run(cache_dir, "export")
    assert to_stdout.returncode == 0 and to_stdout.stdout == export_file.read_text()
    copy = tmp_path / "copy"
    assert run(copy, "import", str(export_file)).returncode == 0
    with Store(copy, readonly=True) as store:
        assert records.unpack(store.get(entry.key.encode())) == entry
