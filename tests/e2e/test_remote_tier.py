"""The remote tier through real mitmdump (SPEC §11): machines that share one bucket on a real S3
API server (moto's server mode), each with its own cache directory, and real clients.

A "machine" is a cache directory: machine A records and uploads; machine B, with an empty local
store and no provider it can reach, replays all of it from the remote and then from its own
store. The proxies get the standard AWS variables the `s3` fixture sets (and nothing else AWS).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from provider_cache.core.keys import KEY_VERSION
from provider_cache.storage.store import Store
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import Mitmdump
from tests.support.s3server import AWS_SECRET_ACCESS_KEY, Bucket

URL = "https://api.openai.com/v1/chat/completions"


def ask(content: str, key: str = secrets.OPENAI_KEY) -> httpx.Response:
    """One chat completion through the proxy the environment names (a planted key sent)."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    with httpx.Client(timeout=30) as client:
        return client.post(URL, json=body, headers={"authorization": f"Bearer {key}"})


def answered(content: str) -> tuple[str, str]:
    """(x-provider-cache, answer id) of a successful answer."""
    response = ask(content)
    response.raise_for_status()
    return response.headers["x-provider-cache"], response.json()["id"]


def stats_of(cache: Path) -> dict:
    return json.loads((cache / "stats.json").read_text())


def objects(s3: Bucket) -> dict[str, bytes]:
    """Every entry object in the bucket, by cache key."""
    client = s3.server.client()
    prefix = f"team/cache/v{KEY_VERSION}/"
    listed = client.list_objects_v2(Bucket=s3.name, Prefix=prefix).get("Contents", [])
    return {
        item["Key"].removeprefix(prefix): client.get_object(Bucket=s3.name, Key=item["Key"])[
            "Body"
        ].read()
        for item in listed
    }


def all_objects_bytes(s3: Bucket) -> list[bytes]:
    client = s3.server.client()
    listed = client.list_objects_v2(Bucket=s3.name).get("Contents", [])
    return [client.get_object(Bucket=s3.name, Key=o["Key"])["Body"].read() for o in listed]


@pytest.fixture
def machine(
    start_proxy: Callable[..., Mitmdump],
    use_proxy: Callable[[Mitmdump], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Mitmdump]:
    """A proxy of one machine (its own cache directory), the clients pointed at it; the
    test's own S3 client (to arrange and inspect the bucket) goes to the server directly."""

    def start(name: str, mode: str, **options: str) -> Mitmdump:
        proxy = start_proxy(mode, cache_dir=str(tmp_path / name), **options)
        use_proxy(proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        return proxy

    return start


PROMPTS = [f"question {n}" for n in range(6)]


def test_a_second_machine_replays_from_the_remote_then_from_its_own_store(
    machine, s3: Bucket, fake: FakeProvider, tmp_path: Path
) -> None:
    a = machine("a", "record", cache_remote=s3.url)
    recorded = [answered(p) for p in PROMPTS]
    assert all(result == "miss" for result, _ in recorded)
    assert a.stop() == 0
    stats_a = stats_of(tmp_path / "a")
    assert stats_a["remote"] | {"failed_keys": [], "conflict_keys": []} == {
        "location": s3.url,
        "misses": len(PROMPTS),  # each asked before it was forwarded
        "errors": 0,
        "skipped": 0,
        "uploaded": len(PROMPTS),
        "pending": 0,
        "failed": 0,
        "conflicts": 0,
        "failed_keys": [],
        "conflict_keys": [],
    }
    assert len(objects(s3)) == len(PROMPTS)

    b = machine("b", "replay", offline=True, cache_remote=s3.url)
    assert [answered(p) for p in PROMPTS] == [("hit", answer) for _, answer in recorded]
    assert b.stop() == 0
    stats_b = stats_of(tmp_path / "b")
    assert (stats_b["hits"], stats_b["misses"]) == (len(PROMPTS), 0)
    assert stats_b["tiers"] == {"local": 0, "remote": len(PROMPTS)}
    assert stats_b["remote"]["misses"] == stats_b["remote"]["errors"] == 0
    assert stats_b["remote"]["uploaded"] == 0  # what B got from the remote is not sent back

    machine("b", "replay", offline=True, cache_remote=s3.url)
    assert [answered(p)[0] for p in PROMPTS] == ["hit"] * len(PROMPTS)
    machine("b", "replay", offline=True)  # no remote at all: B's own store serves
    assert [answered(p)[0] for p in PROMPTS] == ["hit"] * len(PROMPTS)
    assert fake.served == len(PROMPTS)


def test_the_startup_line_names_the_remote_and_whether_it_is_writable(machine, s3: Bucket) -> None:
    writer = machine("a", "record", cache_remote=s3.url)
    reader = machine("b", "replay", cache_remote=s3.url, cache_remote_write="false")
    assert f"remote {s3.url} (read-write)" in writer.log()
    assert f"remote {s3.url} (read-only: cache_remote_write=false)" in reader.log()
    assert AWS_SECRET_ACCESS_KEY not in writer.log() + reader.log()


def test_a_read_only_job_uploads_nothing(machine, s3: Bucket, tmp_path: Path) -> None:
    proxy = machine("a", "record", cache_remote=s3.url, cache_remote_write="false")
    assert [answered(p)[0] for p in PROMPTS[:3]] == ["miss"] * 3
    assert proxy.stop() == 0
    assert all_objects_bytes(s3) == []  # not even the probe's object: it only read
    remote = stats_of(tmp_path / "a")["remote"]
    assert (remote["uploaded"], remote["pending"], remote["failed"]) == (0, 0, 0)
    with Store(tmp_path / "a", readonly=True) as store:
        assert len(store) == 3  # recorded locally all the same


def test_refresh_never_overwrites_the_remote_object(machine, s3: Bucket, tmp_path: Path) -> None:
    recorder = machine("a", "record", cache_remote=s3.url)
    first = answered("refreshed")
    assert recorder.stop() == 0
    before = objects(s3)
    refresh = machine("a", "refresh", cache_remote=s3.url)
    second = answered("refreshed")
    assert second[1] != first[1]  # the provider answered anew
    assert refresh.stop() == 0
    (key,) = before
    remote = stats_of(tmp_path / "a")["remote"]
    assert (remote["uploaded"], remote["conflicts"], remote["conflict_keys"]) == (0, 1, [key])
    assert f"already in {s3.url} with another answer, not replaced: {key}" in refresh.log()
    assert objects(s3) == before

    machine("b", "replay", offline=True, cache_remote=s3.url)
    assert answered("refreshed") == ("hit", first[1])  # every other machine: the first answer
    machine("a", "replay", offline=True, cache_remote=s3.url)
    assert answered("refreshed") == ("hit", second[1])  # A's own store: its refreshed answer


def test_sigint_right_after_the_last_answer_still_uploads_all(
    machine, s3: Bucket, tmp_path: Path
) -> None:
    proxy = machine("a", "record", cache_remote=s3.url)
    many = [f"burst {n}" for n in range(30)]
    threads = [threading.Thread(target=answered, args=(p,)) for p in many]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert proxy.stop() == 0  # SIGINT at once
    assert len(objects(s3)) == len(many)
    remote = stats_of(tmp_path / "a")["remote"]
    assert (remote["uploaded"], remote["pending"], remote["failed"]) == (len(many), 0, 0)


def test_three_shards_record_into_one_bucket_at_once(
    machine, s3: Bucket, tmp_path: Path, fake: FakeProvider
) -> None:
    shards = [machine(f"shard{n}", "record", cache_remote=s3.url) for n in range(3)]
    own = {n: [f"shard {n} question {i}" for i in range(8)] for n in range(3)}

    failures: list[BaseException] = []

    def run(n: int) -> None:
        trust = ssl.create_default_context(cafile=str(shards[n].ca_cert))
        try:
            with httpx.Client(proxy=shards[n].url, verify=trust, timeout=30) as client:
                for prompt in [*own[n], "asked by every shard"]:
                    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
                    client.post(URL, json=body).raise_for_status()
        except BaseException as e:  # said by the main thread
            failures.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for shard in shards:
        assert shard.stop() == 0
    docs = [stats_of(tmp_path / f"shard{n}") for n in range(3)]
    recorded = sum(doc["recorded"] for doc in docs)
    uploaded = sum(doc["remote"]["uploaded"] for doc in docs)
    conflicts = sum(doc["remote"]["conflicts"] for doc in docs)
    # The common request: recorded by each shard that asked before another's upload (the
    # others hit it in the remote); one answer is the object, later ones count as conflicts.
    assert uploaded + conflicts == recorded
    assert sum(doc["tiers"]["remote"] for doc in docs) + recorded == 3 * 9
    assert sum(doc["remote"]["failed"] for doc in docs) == 0
    assert len(objects(s3)) == 3 * 8 + 1

    machine("d", "replay", offline=True, cache_remote=s3.url)
    prompts = [p for n in range(3) for p in own[n]] + ["asked by every shard"]
    with httpx.Client(timeout=30) as client:
        for prompt in prompts:
            body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
            assert client.post(URL, json=body).headers["x-provider-cache"] == "hit"


def test_no_secret_in_any_object_stats_file_or_log(machine, s3: Bucket) -> None:
    proxy = machine("a", "record", cache_remote=s3.url)
    for key in (secrets.OPENAI_KEY, secrets.BODY_KEY, secrets.GATEWAY_KEY):
        ask(f"sent with {key[:8]}", key=key).raise_for_status()
    assert proxy.stop() == 0
    stored = all_objects_bytes(s3)
    assert len(stored) == 4  # three entries and the probe's object
    needles = set().union(*(secrets.encodings(s) for s in secrets.ALL))
    assert [n for n in needles for data in stored if n in data] == []
    # The suite's own scan (tests/conftest.py) covers the logs, stores and stats files.
