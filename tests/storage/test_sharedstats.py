"""Proxies sharing a stats file: the run's sum, never a previous run's parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from provider_cache.core.stats import SCHEMA
from provider_cache.storage.sharedstats import SharedStats, parts_dir


def snapshot(hits: int = 0, misses: int = 0, *, started_at: float = 100.0) -> dict:
    return {
        "schema": SCHEMA,
        "mode": "replay",
        "started_at": started_at,
        "updated_at": started_at + 1,
        "hits": hits,
        "misses": misses,
        "recorded": 0,
        "passthrough": 0,
        "errors": 0,
        "hit_rate": hits / (hits + misses) if hits + misses else None,
        "by_host": {"api.openai.com": {"hits": hits, "misses": misses}},
        "missed": [{"method": "POST", "url": "u", "key": "k", "count": misses}] if misses else [],
    }


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_proxy_alone_writes_its_snapshot_unchanged(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    alone = SharedStats(stats)
    alone.write(snapshot(hits=3))
    assert read(stats) == snapshot(hits=3)
    alone.close()


def test_proxies_alive_together_write_the_sum_of_both(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    a, b = SharedStats(stats), SharedStats(stats)
    a.join()
    b.join()
    a.write(snapshot(hits=5, started_at=100))
    b.write(snapshot(misses=5, started_at=90))
    a.write(snapshot(hits=5, started_at=100))  # whoever writes last, the file holds both
    doc = read(stats)
    assert (doc["hits"], doc["misses"], doc["hit_rate"]) == (5, 5, 0.5)
    assert doc["by_host"]["api.openai.com"]["misses"] == 5
    assert doc["missed"][0]["count"] == 5
    assert (doc["schema"], doc["started_at"], doc["shards"]) == (SCHEMA, 90, 2)
    a.close()
    b.close()


def test_a_new_run_never_sums_the_last_runs_parts(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    old = SharedStats(stats)
    old.write(snapshot(misses=7))
    old.close()
    new = SharedStats(stats)
    new.join()
    new.write(snapshot(hits=1))
    assert (read(stats)["hits"], read(stats)["misses"]) == (1, 0)
    assert len(list(parts_dir(stats).glob("part-*.json"))) == 1
    new.close()


def test_a_member_that_crashed_still_counts_in_its_run(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    survivor = SharedStats(stats)
    survivor.join()
    code = (
        "import json, os, sys; from provider_cache.storage.sharedstats import SharedStats;"
        "s = SharedStats(__import__('pathlib').Path(sys.argv[1]));"
        "s.write(json.loads(sys.argv[2])); os._exit(9)"
    )
    crashed = json.dumps(snapshot(misses=2))
    subprocess.run([sys.executable, "-c", code, str(stats), crashed], check=False)
    survivor.write(snapshot(hits=4))
    assert (read(stats)["hits"], read(stats)["misses"]) == (4, 2)
    survivor.close()


def test_an_unreadable_part_is_not_summed(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    a = SharedStats(stats)
    a.join()
    (parts_dir(stats) / "part-1-garbage.json").write_text("{not json")
    a.write(snapshot(hits=2))
    assert read(stats) == snapshot(hits=2)
    a.close()
