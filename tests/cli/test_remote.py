"""The pure parts of the remote commands (cli/remote.py): gc's choice, manifests, progress,
and how a transfer stops. The commands against a real S3 server: tests/e2e/test_remote_commands.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from provider_cache.cli import main as cli
from provider_cache.cli import manifests, remote
from provider_cache.cli.args import Fail
from provider_cache.storage.remote import ObjectInfo, RemoteError

NOW = 1_800_000_000.0
DAY = 86400.0


def key(n: int) -> str:
    return f"{n:064x}"


def obj(n: int, age: float) -> ObjectInfo:
    return ObjectInfo(key(n), 100, NOW - age)


def manifest_objects(count: int, age: float = 30 * DAY) -> list[ObjectInfo]:
    return [ObjectInfo(f"2025010{i:02d}.json", 10, NOW - age) for i in range(count)]


# --- gc's choice ------------------------------------------------------------------------------


def test_gc_removes_only_what_no_kept_manifest_names_and_is_past_the_grace_period():
    objects = [obj(1, 30 * DAY), obj(2, 30 * DAY), obj(3, 1 * DAY), obj(4, 30 * DAY)]
    garbage = manifests.select_garbage(manifest_objects(2), {key(2)}, objects, 2, NOW - 7 * DAY)
    assert [info.key for info in garbage.objects] == [key(1), key(4)]
    assert garbage.young == 1  # key 3: named by none, but uploaded a day ago
    assert garbage.manifests == []


def test_gc_keeps_the_newest_manifests_and_some_more_and_young_ones():
    names = manifest_objects(2 + manifests.MANIFEST_SLACK + 3)
    garbage = manifests.select_garbage(names, set(), [], 2, NOW - 7 * DAY)
    assert garbage.manifests == names[:3]  # beyond the newest 2 + MANIFEST_SLACK
    young = manifest_objects(2 + manifests.MANIFEST_SLACK + 3, age=DAY)
    assert manifests.select_garbage(young, set(), [], 2, NOW - 7 * DAY).manifests == []


# --- manifests ---------------------------------------------------------------------------------


def test_manifest_names_sort_by_time_and_two_of_one_instant_differ():
    earlier, later = manifests.manifest_name(NOW), manifests.manifest_name(NOW + 0.001)
    assert earlier < later and earlier.endswith(".json")
    assert earlier.startswith("20270115T080000.000Z-")
    assert manifests.manifest_name(NOW) != manifests.manifest_name(NOW)


def test_a_manifest_round_trips_and_a_bad_one_is_refused_with_a_reason():
    body = manifests.manifest_body([key(2), key(1)], NOW)
    doc = json.loads(body)
    assert doc == {"schema": 1, "created_at": "2027-01-15T08:00:00Z", "keys": [key(1), key(2)]}
    assert manifests.manifest_keys(body) == {key(1), key(2)}
    for bad, reason in [
        (b"\xff", "not JSON"),
        (b"[]", "not a manifest"),
        (b'{"schema": 2, "keys": []}', "not a manifest of schema 1"),
        (b'{"schema": 1, "keys": "abc"}', "not a list"),
        (b'{"schema": 1, "keys": [1]}', "not a list of strings"),
    ]:
        with pytest.raises(ValueError, match=reason):
            manifests.manifest_keys(bad)


# --- progress and stopping ---------------------------------------------------------------------


def test_progress_says_nothing_for_a_short_transfer_and_a_line_every_few_seconds():
    now = [0.0]
    lines: list[str] = []
    progress = remote.Progress("push", 200, every=5.0, clock=lambda: now[0], say=lines.append)
    for done in range(1, 201):
        now[0] = done * 0.1  # 10 entries a second: 20 s in all
        progress.tick(done, 0)
    assert lines == [
        "push: 50 of 200 (25%), 0 failed, 10/s",
        "push: 100 of 200 (50%), 0 failed, 10/s",
        "push: 150 of 200 (75%), 0 failed, 10/s",
        "push: 200 of 200 (100%), 0 failed, 10/s",
    ]


def failing(transient: bool, after: int = 0):
    """A work function whose calls fail from the `after`-th on."""
    calls = []
    lock = threading.Lock()

    def work(k: str) -> tuple[str, None]:
        with lock:
            calls.append(k)
            n = len(calls)
        if n > after:
            raise RemoteError(f"remote s3://b/p: put {k[:12]}: Boom", "Boom", transient)
        return "pushed", None

    return work, calls


def test_a_failure_that_will_not_heal_stops_the_transfer_at_once():
    work, calls = failing(transient=False)
    outcome = remote.transfer("push", [key(n) for n in range(100)], work, 2)
    assert outcome.stopped is not None and len(outcome.failed) == 1
    assert len(calls) <= 4  # what was queued (2 x jobs) at most: the rest never started


def test_transient_failures_are_named_and_stop_the_transfer_after_a_few(capsys):
    work, calls = failing(transient=True, after=5)
    outcome = remote.transfer("push", [key(n) for n in range(100)], work, 1)
    assert outcome.counts["pushed"] == 5 and len(outcome.failed) == remote.MAX_FAILURES
    assert outcome.stopped is not None and len(calls) < 5 + remote.MAX_FAILURES + 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == remote.MAX_FAILURES - 1 and all("push: failed " in line for line in err)
    with pytest.raises(Fail) as stop:
        remote.finish("push", outcome, "pushed 5, already there 0, failed 10", print)
    assert stop.value.code == 1 and "stopped after 10 failures" in str(stop.value)


def test_parallel_runs_jobs_at_once_and_returns_every_result():
    running, peak = [0], [0]
    lock = threading.Lock()

    def work(k: str) -> tuple[str, str]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return "done", k

    results = dict(remote.parallel(work, [key(n) for n in range(40)], 4))
    assert results == {key(n): ("done", key(n)) for n in range(40)}
    assert peak[0] == 4


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["push", "--remote", "s3://AKIA:hunter2@bucket/p"], "without credentials"),
        (["push", "--remote", "https://bucket/p"], "must be s3://BUCKET/PREFIX"),
        (["push", "--remote", "s3://ok-bucket/p", "--jobs", "0"], "must be 1 or more"),
        (["pull", "--remote", "s3://ok-bucket/p", "--jobs", "65"], "at most 64"),
        (["gc", "--remote", "s3://ok-bucket/p"], "--keep"),
        (["gc", "--remote", "s3://ok-bucket/p", "--keep", "2", "--grace", "7x"], "not an age"),
        (["push"], "--remote"),
    ],
)
def test_bad_options_are_one_line_and_exit_2_without_echoing_the_value(
    argv, reason, tmp_path, capsys
):
    assert cli.main(["recordings", "--cache-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and reason in err and "hunter2" not in err


def test_rebuild_refuses_a_bad_remote_before_anything_runs(tmp_path, capsys):
    argv = ["rebuild", "--min-hit-rate", "1", "--remote", "s3://x:y@b/p", "--", "false"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "without credentials" in err and "x:y" not in err


def test_the_options_name_the_remote_as_remoteobject_does():
    from provider_cache.cli import args
    from provider_cache.core import remoteobject

    assert args.URL_FORM == remoteobject.URL_FORM  # kept twice: the gate imports no msgpack
