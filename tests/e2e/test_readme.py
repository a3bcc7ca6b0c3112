"""The README's recipes, run as written: the GitHub Actions job and the offline walk-through.

The walk-through runs `./dev demo` and `./dev proxy` from this checkout in a fresh directory,
with a free port and their own confdir (`--listen-port`, `--set confdir=`: the only
additions), and the README's demo.py as the client.

The job's `run:` lines run in order with bash, as a runner does, in a directory laid out like
the application's checkout (a pytest suite of openai SDK calls and its recordings). What
cannot run here is replaced, and only that: `actions/checkout` is the directory the test
prepares, `actions/setup-python` is this environment's Python on PATH, the `pip install`
lines are skipped (provider-cache and the SDK are already installed in it), and
`actions/upload-artifact` checks that the file it would upload exists. `$GITHUB_STEP_SUMMARY`
is a file the test reads.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import PROVIDER_HOSTS
from tests.support import secrets
from tests.support.actions import run_action
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import RESOLVE_ADDON, ROOT_DIR, free_port

README = ROOT_DIR / "README.md"
BIN = Path(sys.executable).parent
PROMPTS = ["Translate good morning", "Translate hello", "Name three colours"]

#: The application's own tests, as a user writes them: configured by the environment only.
APP_TEST = """\
import openai
import pytest


@pytest.mark.parametrize("prompt", {prompts!r})
def test_answers(prompt):
    client = openai.OpenAI(max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{{"role": "user", "content": prompt}}]
    )
    assert answer.choices[0].message.content == "echo: " + prompt
"""


def fenced(language: str) -> list[str]:
    """The README's code blocks in that language, in order."""
    pattern = rf"^```{language}\n(.*?)^```$"
    return re.findall(pattern, README.read_text(), flags=re.MULTILINE | re.DOTALL)


def actions_job(index: int = 0) -> dict:
    """The one job of the README's `index`-th GitHub Actions workflow (0: replay from the
    committed store; 1: with the shared bucket, tests/e2e/test_readme_remote.py)."""
    workflow = fenced("yaml")[index]
    jobs = YAML(typ="safe", pure=True).load(workflow)["jobs"]
    (job,) = jobs.values()
    return job


def write_app(checkout: Path, prompts: list[str]) -> None:
    tests = checkout / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    (tests / "test_prompts.py").write_text(APP_TEST.format(prompts=prompts))


def record(checkout: Path, fake: FakeProvider) -> None:
    """The developer's record run (with a key; upstream is the fake provider)."""
    argv = [BIN / "provider-cache", "run", "--mode", "record", "--cache-dir", "tests/recordings"]
    argv += ["--confdir", checkout.parent / "record-conf", "--script", RESOLVE_ADDON]
    argv += ["--set", f"ssl_verify_upstream_trusted_ca={fake.ca_path}"]
    argv += [
        a for h in PROVIDER_HOSTS for a in ("--set", f"test_resolve={h}=127.0.0.1:{fake.port}")
    ]
    env = os.environ | {"OPENAI_API_KEY": secrets.OPENAI_KEY, "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(
        [str(a) for a in [*argv, "--", "pytest", "-q", "tests/"]],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Step:
    name: str
    status: str  # "passed", "failed" or "skipped", as the runner shows it
    script: str = ""
    output: str = ""


def without_installs(script: str) -> str:
    """The step's script minus its `pip install` lines (provider-cache is installed here)."""
    return "\n".join(line for line in script.splitlines() if not line.startswith("pip install"))


def use_action(step: dict, checkout: Path, env: dict[str, str]) -> str:
    """What an action the job uses amounts to here; unknown actions fail the test. Ours
    (OWNER/provider-cache) runs its own action.yml, as the runner would."""
    action = step["uses"].split("@")[0]
    if action in ("actions/checkout", "actions/setup-python"):
        return "passed"  # the prepared directory; this environment's Python on PATH
    if action == "actions/upload-artifact":
        return "passed" if (checkout / step["with"]["path"]).is_file() else "failed"
    if action.endswith("/provider-cache"):
        runner_temp = checkout.parent / "runner-temp"
        runner_temp.mkdir(exist_ok=True)
        inputs = {name: str(value) for name, value in step.get("with", {}).items()}
        used = run_action(inputs, checkout, env, runner_temp)
        Path(env["GITHUB_STEP_SUMMARY"]).write_text(used.summary)
        return "failed" if used.failed else "passed"
    pytest.fail(f"the README's workflow uses {action}, which this test does not know")


_EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")
_EVENT_TEST = re.compile(r"github\.event_name\s*(==|!=)\s*'(\w+)'")


def wanted(condition: str | None, event: str, failed: bool) -> bool:
    """Whether a step runs: GitHub's `if:` for the forms the README uses."""
    if condition is None:
        return not failed
    if condition == "always()":
        return True
    found = _EVENT_TEST.fullmatch(condition.strip())
    assert found, f"the README's workflow has an `if:` this test cannot evaluate: {condition}"
    return not failed and (event == found[2]) == (found[1] == "==")


def expand(value: object, context: dict[str, str]) -> str:
    """`${{ secrets.NAME }}` and `${{ vars.NAME }}` from `context`; an unknown one fails."""

    def lookup(found: re.Match[str]) -> str:
        assert found[1] in context, f"the workflow needs {found[1]}, which the test did not give"
        return context[found[1]]

    return _EXPRESSION.sub(lookup, str(value))


def run_job(
    job: dict,
    checkout: Path,
    summary: Path,
    event: str = "push",
    context: dict[str, str] | None = None,
    rewrite: Callable[[str], str] = lambda script: script,
    overrides: dict[str, str] | None = None,
) -> list[Step]:
    """The job's steps in order, for `event`: after a failure only `if: always()` steps
    run; env values get `context`'s secrets and vars; `rewrite` adapts a script and
    `overrides` the job's env to this machine (the test's fake provider and S3 server in
    place of the real ones)."""
    context = context or {}
    env = os.environ | {k: expand(v, context) for k, v in job.get("env", {}).items()}
    env |= overrides or {}
    env |= {"GITHUB_STEP_SUMMARY": str(summary), "PATH": f"{BIN}:{os.environ['PATH']}"}
    steps: list[Step] = []
    for step in job["steps"]:
        name = step.get("name", step.get("uses", ""))
        failed = any(s.status == "failed" for s in steps)
        if not wanted(step.get("if"), event, failed):
            steps.append(Step(name, "skipped"))
        elif "uses" in step:
            steps.append(Step(name, use_action(step, checkout, env)))
        else:
            step_env = env | {k: expand(v, context) for k, v in step.get("env", {}).items()}
            done = subprocess.run(
                ["bash", "-e", "-c", rewrite(without_installs(step["run"]))],
                cwd=checkout,
                env=step_env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            status = "passed" if done.returncode == 0 else "failed"
            steps.append(Step(name, status, step["run"], done.stdout + done.stderr))
    return steps


@pytest.mark.parametrize(
    ("pull_request", "headline"),
    [
        ([], "### ✅ provider-cache: hit rate 100.0% meets the threshold 100.0%"),
        (
            [("Translate hello", "Translate goodbye")],
            "### ❌ provider-cache: hit rate 66.7% is below the threshold 100.0%",
        ),
    ],
    ids=["gate-passes", "gate-fails"],
)
def test_the_github_actions_job_summary_agrees_with_the_gate(
    tmp_path: Path, fake: FakeProvider, pull_request: list[tuple[str, str]], headline: str
) -> None:
    checkout = tmp_path / "checkout"
    write_app(checkout, PROMPTS)
    record(checkout, fake)
    changed = [dict(pull_request).get(p, p) for p in PROMPTS]
    write_app(checkout, changed)  # the pull request, if any
    summary = tmp_path / "step-summary.md"

    steps = run_job(actions_job(), checkout, summary)

    gate = next(s for s in steps if "replayed" in s.name)
    assert gate.status == ("failed" if pull_request else "passed"), gate.output
    assert summary.read_text().startswith(headline), [s.output for s in steps]
    assert steps[-1].status == "passed"  # the stats file is uploaded either way
    assert fake.served == len(PROMPTS)  # the job itself never reached the provider


# -- the walk-through ------------------------------------------------------------------------

DEV = ROOT_DIR / "dev"
RECORDED = ["miss | chatcmpl-1 | echo: Say hello", "miss | echo: Count to three"]
REPLAYED = ["hit | chatcmpl-1 | echo: Say hello", "hit | echo: Count to three"]
UNRECORDED = (
    'import openai; openai.OpenAI().chat.completions.create(model="gpt-4o-mini", '
    'messages=[{"role": "user", "content": "Something new"}])'
)


def start_dev(command: str, port: int, confdir: Path, cwd: Path, *options: str) -> subprocess.Popen:
    """`./dev COMMAND` in its own process group, as a terminal runs it (Ctrl-C: the group)."""
    argv = [str(DEV), command, "--listen-port", str(port), "--set", f"confdir={confdir}", *options]
    with (cwd / f"{command}.log").open("w") as log:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with opener.open("http://provider-cache.internal/stats", timeout=2):
                return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    stop(proc)
    pytest.fail(f"./dev {command} did not start:\n{(cwd / f'{command}.log').read_text()}")


def stop(proc: subprocess.Popen) -> int:
    """Ctrl-C: SIGINT to the process group; the whole group must be gone soon after."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def client_env(port: int, confdir: Path) -> dict[str, str]:
    """What `eval "$(provider-cache env)"` exports, plus the placeholder key."""
    argv = [
        BIN / "provider-cache",
        "env",
        "--proxy",
        f"http://127.0.0.1:{port}",
        "--confdir",
        confdir,
    ]
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
    return os.environ | exports | {"OPENAI_API_KEY": secrets.OPENAI_KEY}


def python(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_walk_through_records_with_dev_demo_and_replays_offline(tmp_path: Path) -> None:
    work, confdir = tmp_path / "work", tmp_path / "conf"
    work.mkdir()
    (demo_py,) = [b for b in fenced("python") if "x-provider-cache" in b]
    (work / "demo.py").write_text(demo_py)
    readme = README.read_text()
    assert all(line in readme for line in RECORDED + REPLAYED)  # the output the README shows
    port = free_port()

    demo = start_dev("demo", port, confdir, work)
    try:
        env = client_env(port, confdir)
        first, second = python(work, env, "demo.py"), python(work, env, "demo.py")
    finally:
        assert stop(demo) == 0
    log = (work / "demo.log").read_text()
    fake_port = int(re.search(r"fake provider at https://localhost:(\d+)", log)[1])
    assert first.stdout.splitlines() == RECORDED, first.stderr
    assert second.stdout.splitlines() == [line.replace("miss", "hit") for line in RECORDED]
    assert not listening(fake_port)  # Ctrl-C stopped the fake provider too
    assert not list((tmp_path / "tmp").glob("provider-cache-demo.*"))  # and removed its files

    replay = start_dev("proxy", port, confdir, work, "--set", "cache_mode=replay")
    try:
        replayed = python(work, env, "demo.py")
        unrecorded = python(work, env, "-c", UNRECORDED)
    finally:
        assert stop(replay) == 0
    assert replayed.stdout.splitlines() == REPLAYED, replayed.stderr
    assert unrecorded.returncode == 1
    assert unrecorded.stderr.splitlines()[-1].startswith(
        "openai.NotFoundError: Error code: 404 - provider-cache: no recording for "
        "POST https://api.openai.com/v1/chat/completions"
    )
