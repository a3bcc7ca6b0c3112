"""Running the top-level `action.yml` (SPEC §12) as GitHub's runner runs a composite action.

Each `run:` step is executed with bash, with the environment GitHub provides
(`GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`, `GITHUB_ACTION_PATH`, `RUNNER_TEMP`, `RUNNER_OS`),
its `env:` expanded from `inputs.*` and `steps.ID.outputs.*`, and its outputs read back from
`GITHUB_OUTPUT`. The two actions it uses stand for what they do on a runner: setup-python
names this environment's Python (without touching PATH, as `update-environment: false`
says), and the cache restores the proxy's environment: the project's own virtual
environment, linked in, so the install step is skipped as on a cache hit.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

from tests.support.proxy import ROOT_DIR

ACTION = ROOT_DIR / "action.yml"
VENV = Path(sys.executable).parent.parent

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_REFERENCE = re.compile(r"(inputs|steps\.[\w-]+\.outputs|github|runner)\.([\w-]+)")
_COMPARISON = re.compile(r"([\w.-]+)\s*(==|!=)\s*'([^']*)'")


def definition() -> dict:
    return YAML(typ="safe", pure=True).load(ACTION.read_text())


@dataclass
class ActionRun:
    """What one use of the action did: each step's status, the outputs, the files."""

    statuses: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    summary: str = ""

    @property
    def failed(self) -> bool:
        return "failed" in self.statuses.values()

    def log(self) -> str:
        return "\n".join(f"--- {name}: {text}" for name, text in self.logs.items())


class _Context:
    def __init__(self, inputs: dict[str, str], runner_temp: Path) -> None:
        self.inputs = inputs
        self.steps: dict[str, dict[str, str]] = {}
        self.runner = {"temp": str(runner_temp), "os": "Linux"}
        self.github = {"action_path": str(ROOT_DIR)}

    def value(self, name: str) -> str:
        found = _REFERENCE.fullmatch(name)
        assert found, f"action.yml uses ${{{{ {name} }}}}, which this runner does not know"
        scope, key = found.groups()
        if scope == "inputs":
            return self.inputs[key]
        if scope == "github":
            return self.github[key]
        if scope == "runner":
            return self.runner[key]
        return self.steps.get(scope.split(".")[1], {}).get(key, "")

    def expand(self, text: object) -> str:
        if isinstance(text, bool):  # YAML's false is the string "false" to an action
            return str(text).lower()
        return _EXPRESSION.sub(lambda m: self.value(m[1]), str(text))

    def wanted(self, condition: str | None, failed: bool) -> bool:
        """`if:` in the forms action.yml uses: always(), comparisons, joined by &&."""
        if condition is None:
            return not failed
        always, ok = False, True
        for part in (p.strip() for p in condition.split("&&")):
            if part == "always()":
                always = True
                continue
            found = _COMPARISON.fullmatch(part)
            assert found, f"action.yml has an `if:` this runner cannot evaluate: {condition}"
            left, operator, right = found.groups()
            ok = ok and ((self.value(left) == right) == (operator == "=="))
        return ok and (always or not failed)


def run_action(
    inputs: dict[str, str], cwd: Path, env: dict[str, str], runner_temp: Path
) -> ActionRun:
    """The action, used by a job step `with: inputs`, in working directory `cwd`."""
    spec = definition()
    given = {name: str(d.get("default", "")) for name, d in spec["inputs"].items()}
    unknown = set(inputs) - set(given)
    assert not unknown, f"inputs action.yml does not declare: {unknown}"
    given |= inputs
    missing = [n for n, d in spec["inputs"].items() if d.get("required") and not given[n]]
    assert not missing, f"required inputs missing: {missing}"
    context = _Context(given, runner_temp)
    summary = runner_temp / "step-summary.md"
    summary.touch()
    result = ActionRun()
    for index, step in enumerate(spec["runs"]["steps"]):
        step_id = step.get("id", f"step-{index}")
        if not context.wanted(step.get("if"), result.failed):
            result.statuses[step_id] = "skipped"
            continue
        if "uses" in step:
            context.steps[step_id] = _use(step, context)
            result.statuses[step_id] = "passed"
            continue
        output = runner_temp / f"output-{index}"
        output.write_text("")
        step_env = env | {k: context.expand(v) for k, v in step.get("env", {}).items()}
        step_env |= {
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_ACTION_PATH": str(ROOT_DIR),
            "RUNNER_TEMP": str(runner_temp),
            "RUNNER_OS": "Linux",
        }
        assert step.get("shell") == "bash", f"step {step_id}: a composite step names its shell"
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=cwd,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        result.statuses[step_id] = "passed" if done.returncode == 0 else "failed"
        result.logs[step_id] = done.stdout + done.stderr
        context.steps[step_id] = dict(
            line.split("=", 1) for line in output.read_text().splitlines() if "=" in line
        )
    result.outputs = {
        name: context.expand(d["value"]) for name, d in spec.get("outputs", {}).items()
    }
    result.summary = summary.read_text()
    return result


def _use(step: dict, context: _Context) -> dict[str, str]:
    """The outputs of an action the composite uses, as it behaves on a runner."""
    action = step["uses"].split("@")[0]
    given = {k: context.expand(v) for k, v in step.get("with", {}).items()}
    if action == "actions/setup-python":
        assert given.get("update-environment") == "false", "the application keeps its Python"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return {"python-version": version, "python-path": sys.executable}
    if action == "actions/cache":
        path = Path(given["path"])
        if not path.exists():
            path.symlink_to(VENV)  # a cache hit: the environment is restored
        return {"cache-hit": "true"}
    raise AssertionError(f"action.yml uses {action}, which this runner does not know")
