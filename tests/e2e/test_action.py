"""The GitHub Action (`action.yml`, SPEC §12): its steps run as a runner runs them.

An application recorded once (its own tests, the real openai SDK, the fake provider) is
replayed by the action: a passing run writes ✅ to the job summary and sets the outputs; a
pull request that changes a prompt fails the step, shows ❌ and counts the miss; a command
that fails fails the step even when the gate passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.test_readme import BIN, PROMPTS, record, write_app
from tests.support import secrets
from tests.support.actions import definition, run_action
from tests.support.fake_provider import FakeProvider


@pytest.fixture
def recorded(tmp_path: Path, fake: FakeProvider) -> Path:
    checkout = tmp_path / "checkout"
    write_app(checkout, PROMPTS)
    record(checkout, fake)
    return checkout


def use(checkout: Path, tmp_path: Path, **inputs: str) -> object:
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    # The planted key, so that the test can see it is written nowhere (replay: by presence).
    env = os.environ | {"OPENAI_API_KEY": secrets.OPENAI_KEY, "PATH": f"{BIN}:{os.environ['PATH']}"}
    given = {"cache-dir": "tests/recordings", "command": "pytest -q tests/"} | inputs
    return run_action(
        {k.replace("_", "-"): v for k, v in given.items()}, checkout, env, runner_temp
    )


def test_the_action_declares_the_inputs_and_outputs_of_the_spec() -> None:
    spec = definition()
    assert {"mode", "cache-dir", "remote", "min-hit-rate", "command"} <= set(spec["inputs"])
    assert set(spec["outputs"]) == {"hit-rate", "misses"}
    assert spec["runs"]["using"] == "composite"


def test_a_replay_that_hits_passes_with_a_green_summary_and_outputs(
    recorded: Path, tmp_path: Path, fake: FakeProvider
) -> None:
    run = use(recorded, tmp_path)
    assert not run.failed, run.log()
    assert run.statuses["python"] == "passed"
    assert run.summary.startswith("### ✅ provider-cache: hit rate 100.0%"), run.summary
    assert run.outputs == {"hit-rate": "1.0", "misses": "0"}
    assert fake.served == len(PROMPTS)  # replay: the provider was never asked


def test_a_changed_prompt_fails_the_step_shows_red_and_counts_the_miss(
    recorded: Path, tmp_path: Path, fake: FakeProvider
) -> None:
    write_app(recorded, ["Translate goodbye" if p == "Translate hello" else p for p in PROMPTS])
    run = use(recorded, tmp_path)
    assert run.statuses["run"] == "passed"  # the report step decides the step's result
    assert run.statuses["report"] == "failed"
    assert run.summary.startswith("### ❌ provider-cache: hit rate 66.7% is below"), run.summary
    assert "Translate goodbye" in run.summary
    assert run.outputs["misses"] == "1"
    assert float(run.outputs["hit-rate"]) == pytest.approx(2 / 3)
    assert fake.served == len(PROMPTS)


def test_a_failing_command_fails_the_step_though_the_gate_passes(
    recorded: Path, tmp_path: Path
) -> None:
    run = use(recorded, tmp_path, command="pytest -q tests/ && exit 3")
    assert run.statuses["report"] == "failed"
    assert run.summary.startswith("### ✅"), run.summary  # the cache was fine; the tests not
    assert run.outputs["misses"] == "0"


def test_options_and_a_missing_threshold_reach_the_proxy(recorded: Path, tmp_path: Path) -> None:
    """No threshold: no gate, as the summary says; `options` lines become --set options."""
    run = use(recorded, tmp_path, min_hit_rate="", options="cache_window_size=7\n\n")
    assert not run.failed, run.log()
    stats = (tmp_path / "runner-temp" / "provider-cache-stats.json").read_text()
    assert '"size": 7' in stats
    assert "no threshold set" in run.summary.splitlines()[0]
    assert secrets.OPENAI_KEY not in stats and secrets.OPENAI_KEY not in run.summary
