import subprocess
import sys

from provider_cache.storage.sharedrun import SharedRun


def test_the_first_joiner_begins_a_run_and_later_ones_join_it(tmp_path):
    a, b = SharedRun(tmp_path), SharedRun(tmp_path)
    with a.joining() as first:
        assert first
    with b.joining() as first:
        assert not first
    a.leave()
    b.leave()


def test_a_run_ends_when_its_last_member_leaves(tmp_path):
    a, b, c = SharedRun(tmp_path), SharedRun(tmp_path), SharedRun(tmp_path)
    with a.joining():
        pass
    with b.joining():
        pass
    a.leave()
    with c.joining() as first:  # b is still alive: the same run
        assert not first
    b.leave()
    c.leave()
    with a.joining() as first:
        assert first
    a.leave()


def test_a_member_that_died_holds_nothing(tmp_path):
    code = (
        "import os, sys; from provider_cache.storage.sharedrun import SharedRun;"
        "r = SharedRun(sys.argv[1]); r.joining().__enter__(); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    run = SharedRun(tmp_path)
    with run.joining() as first:
        assert first
    run.leave()


def test_joining_twice_is_refused(tmp_path):
    run = SharedRun(tmp_path)
    with run.joining():
        pass
    try:
        with run.joining():
            pass
    except RuntimeError:
        pass
    else:
        raise AssertionError("a second join must be refused")
    run.leave()
