"""cache_rebuild.py's backoff: full jitter under a cap, retry-after as a floor, saved state."""

from __future__ import annotations

import json
import random
import stat
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from provider_cache.cli.backoff import HISTORY, SCHEMA, Policy, State, load, save

POLICY = Policy()  # base 30 s, factor 2, cap 900 s


# --- Policy.delay ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [(0, 30.0), (1, 30.0), (2, 60.0), (3, 120.0), (5, 480.0), (6, 900.0), (7, 900.0), (40, 900.0)],
)
def test_delay_is_uniform_up_to_the_capped_exponential(failures: int, ceiling: float) -> None:
    rng = random.Random(1234)
    delays = [POLICY.delay(failures, rng) for _ in range(400)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > 0.95 * ceiling  # the whole range is used: full jitter
    assert min(delays) < 0.05 * ceiling


def test_delay_is_the_same_for_the_same_seed() -> None:
    first = [POLICY.delay(n, random.Random(7)) for n in range(1, 6)]
    again = [POLICY.delay(n, random.Random(7)) for n in range(1, 6)]
    assert first == again
    assert first[0] == random.Random(7).uniform(0, 30.0)


@pytest.mark.parametrize("retry_after", [45.0, 100.0])
def test_retry_after_is_a_floor(retry_after: float) -> None:
    rng = random.Random(99)
    delays = [POLICY.delay(1, rng, retry_after) for _ in range(200)]  # jitter is below 30 s
    assert delays == [retry_after] * 200


def test_retry_after_beyond_the_cap_is_still_honoured() -> None:
    """We never come back before the provider allows, whatever our own cap."""
    assert POLICY.delay(10, random.Random(1), retry_after=3600.0) == 3600.0


def test_a_short_retry_after_does_not_shorten_the_jitter() -> None:
    seeded = random.Random(5).uniform(0, 120.0)
    assert seeded > 1.0
    assert POLICY.delay(3, random.Random(5), retry_after=1.0) == seeded


@pytest.mark.parametrize("retry_after", [None, 0.0])
def test_no_retry_after_is_the_jitter_alone(retry_after: float | None) -> None:
    assert POLICY.delay(2, random.Random(3), retry_after) == random.Random(3).uniform(0, 60.0)


def test_policy_parameters_are_used() -> None:
    policy = Policy(base=1.0, factor=3.0, cap=5.0)
    rng = random.Random(11)
    second = [policy.delay(2, rng) for _ in range(200)]  # 1 * 3 = 3
    assert 2.8 < max(second) <= 3.0
    late = [policy.delay(9, rng) for _ in range(200)]  # 1 * 3**8, capped at 5
    assert 4.5 < max(late) <= 5.0


@pytest.mark.parametrize(("factor", "failures"), [(2.0, 1100), (10.0, 400)])
def test_delay_is_capped_after_very_many_failures(factor: float, failures: int) -> None:
    """State persists between CI runs and failures only reset on success: the count can grow."""
    policy = Policy(factor=factor)
    assert 0.0 <= policy.delay(failures, random.Random(1)) <= policy.cap


# --- State -----------------------------------------------------------------------------------


def test_note_keeps_the_most_recent_history() -> None:
    state = State()
    for i in range(HISTORY + 5):
        state.note({"n": i})
    assert [r["n"] for r in state.history] == list(range(5, HISTORY + 5))


# --- load and save ---------------------------------------------------------------------------


def test_missing_file_is_a_fresh_state_without_a_warning(tmp_path: Path) -> None:
    assert load(tmp_path / "rebuild-state.json") == (State(), None)


UNREADABLE = {
    "invalid-json": "{not json",
    "empty": "",
    "json-list": "[1, 2]",
    "json-null": "null",
    "schema-2": json.dumps({**asdict(State()), "schema": 2}),
    "no-schema": json.dumps({"failures": 3}),
    "unknown-field": json.dumps({**asdict(State()), "surprise": 1}),
    # Issue 12: the right fields with the wrong types raised later, in the middle of a rebuild.
    "failures-str": json.dumps({"schema": 1, "failures": "x"}),
    "failures-list": json.dumps({"schema": 1, "failures": [1]}),
    "failures-bool": json.dumps({"schema": 1, "failures": True}),
    "failures-negative": json.dumps({"schema": 1, "failures": -1}),
    "next-allowed-str": json.dumps({"schema": 1, "next_allowed_at": "soon"}),
    "next-allowed-list": json.dumps({"schema": 1, "next_allowed_at": [1]}),
    "next-allowed-nan": '{"schema": 1, "next_allowed_at": NaN}',
    "last-verified-str": json.dumps({"schema": 1, "last_verified_at": "x"}),
    "last-hit-rate-str": json.dumps({"schema": 1, "last_hit_rate": "1"}),
    "command-str": json.dumps({"schema": 1, "command": "pytest"}),
    "command-ints": json.dumps({"schema": 1, "command": [1, 2]}),
    "history-str": json.dumps({"schema": 1, "history": "x"}),
    "history-ints": json.dumps({"schema": 1, "history": [1]}),
    "history-no-kind": json.dumps({"schema": 1, "history": [{"at": 1.0}]}),
    "history-at-str": json.dumps({"schema": 1, "history": [{"at": "x", "kind": "check"}]}),
}


@pytest.mark.parametrize("text", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_file_is_a_fresh_state_with_a_one_line_warning(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "rebuild-state.json"
    path.write_text(text)
    state, warning = load(path)
    assert state == State()
    assert warning is not None
    assert warning.startswith(f"ignoring unreadable backoff state {path} (")
    assert warning.endswith("); starting afresh")
    assert "\n" not in warning


def test_a_wrong_type_warning_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "rebuild-state.json"
    path.write_text(json.dumps({"schema": 1, "failures": "x"}))
    assert "field 'failures' is not a count" in (load(path)[1] or "")


def test_a_partial_state_of_the_right_types_is_read(tmp_path: Path) -> None:
    path = tmp_path / "rebuild-state.json"
    path.write_text(json.dumps({"schema": 1, "failures": 2, "next_allowed_at": 5}))
    assert load(path) == (State(failures=2, next_allowed_at=5), None)


def test_wrong_schema_warning_names_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "rebuild-state.json"
    path.write_text(json.dumps({**asdict(State()), "schema": 7}))
    assert "schema 7" in (load(path)[1] or "")


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.mkdir(),  # a directory where the file should be
        lambda p: p.write_bytes(b"\xff\xfe\x00 not utf-8"),
    ],
    ids=["directory", "not-utf-8"],
)
def test_a_file_that_cannot_be_read_is_a_fresh_state_with_a_warning(
    tmp_path: Path, make: Callable[[Path], object]
) -> None:
    path = tmp_path / "rebuild-state.json"
    make(path)
    state, warning = load(path)
    assert state == State() and warning is not None and "starting afresh" in warning


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "rebuild-state.json"
    state = State(
        failures=2,
        next_allowed_at=1_735_787_045.5,
        last_verified_at=1_735_700_000.0,
        last_hit_rate=0.875,
        command=["pytest", "-q", "tests/"],
        history=[{"at": 1.0, "kind": "check", "status": 0, "hit_rate": 0.5, "misses": 3}],
    )
    save(path, state)
    assert load(path) == (state, None)
    assert json.loads(path.read_text())["schema"] == SCHEMA == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_replaces_the_previous_state(tmp_path: Path) -> None:
    path = tmp_path / "rebuild-state.json"
    save(path, State(failures=5))
    save(path, State(failures=0, last_hit_rate=1.0))
    assert load(path) == (State(failures=0, last_hit_rate=1.0), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rebuild-state.json", "tmp"]
