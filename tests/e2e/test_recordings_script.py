"""scripts/recordings.py on stores recorded through real mitmdump (SPEC §7)."""

from __future__ import annotations

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
    assert dry.stdout.count("would remove") == 1 and "last used run 1" in dry.stdout
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
