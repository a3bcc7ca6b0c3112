"""User rules for volatile content (SPEC §3) on a real mitmdump, with the openai SDK.

A prompt that carries a fresh UUID, or a body with a run id, never hits without a rule;
with `cache_normalize=uuid` or `cache_ignore_json=$.metadata.run_id` it does, and a miss
made under a new rule says which rule applied.
"""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from provider_cache.core.diagnose import SAME_REQUEST_OTHER_RULES
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import Mitmdump


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)


@pytest.fixture
def new_client() -> Iterator:
    clients: list[openai.OpenAI] = []

    def make() -> openai.OpenAI:
        clients.append(openai.OpenAI(max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def ask(client: openai.OpenAI, prompt: str, **extra: object) -> tuple[str | None, str]:
    """(x-provider-cache, the answer's text) of one chat completion."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], **extra
    )
    return raw.headers.get("x-provider-cache"), raw.parse().choices[0].message.content or ""


def closest_of(proxy: Mitmdump, timeout: float = 10) -> list[dict]:
    """The stats' missed requests once the background diagnosis has filled them in."""
    deadline = time.monotonic() + timeout
    mitm_ca = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.url, trust_env=False, verify=mitm_ca, timeout=10) as client:
        while time.monotonic() < deadline:
            missed = client.get("https://provider-cache.internal/stats").json()["missed"]
            if missed and all(m.get("closest") for m in missed):
                return missed
            time.sleep(0.05)
    raise AssertionError("no diagnosis of the misses in time")


def prompt(run: uuid.UUID) -> str:
    return f"You are test run {run}. Say hello."


def test_prompts_differing_only_in_a_uuid_hit_with_cache_normalize_uuid(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    first_run, second_run, third_run, fourth_run, fifth_run = (uuid.uuid4() for _ in range(5))

    use_proxy(start_proxy("record"))  # no rule: each new UUID is a new request
    client = new_client()
    assert ask(client, prompt(first_run))[0] == "miss"
    assert ask(client, prompt(second_run))[0] == "miss"
    assert fake.served == 2

    normalizing = start_proxy("record", cache_normalize=["uuid"])
    use_proxy(normalizing)
    client = new_client()
    # Recorded without the rule: keyed under other rules, one miss to record it again.
    state, recorded = ask(client, prompt(third_run))
    assert (state, recorded) == ("miss", f"echo: {prompt(third_run)}")
    (missed,) = closest_of(normalizing)
    assert missed["closest"]["differences"] == [
        SAME_REQUEST_OTHER_RULES,
        "rule applied: cache_normalize uuid replaced 1 value",
    ]
    assert str(third_run) not in str(missed["closest"])  # names the rule, not the value
    # Another UUID: a hit, answered with what was recorded for the third run. This is the
    # caveat: a normalised value can no longer be asserted on in the answer.
    assert ask(client, prompt(fourth_run)) == ("hit", recorded)
    assert fake.served == 3

    use_proxy(start_proxy("replay", offline=True, cache_normalize=["uuid"]))
    assert ask(new_client(), prompt(fifth_run)) == ("hit", recorded)

    use_proxy(start_proxy("replay", offline=True))  # the same request without the rule
    with pytest.raises(openai.NotFoundError) as miss:
        ask(new_client(), prompt(fifth_run))
    assert miss.value.response.headers["x-provider-cache"] == "miss"
    assert fake.served == 3


def test_a_run_id_field_hits_with_cache_ignore_json(
    start_proxy, use_proxy, new_client, fake: FakeProvider
) -> None:
    def with_run(run_id: str, content: str = "Say hello.") -> tuple[str | None, str]:
        return ask(client, content, metadata={"run_id": run_id, "suite": "smoke"}, store=True)

    use_proxy(start_proxy("record", cache_ignore_json=["$.metadata.run_id"]))
    client = new_client()
    first = with_run("run-0001")
    assert first == ("miss", "echo: Say hello.")
    assert with_run("run-0002") == ("hit", first[1])
    assert with_run("run-0003", "Say goodbye.")[0] == "miss"  # the rest of the body counts
    assert fake.served == 2
    assert b"run-0001" in fake.requests[0]["body"]  # upstream got the field as sent

    use_proxy(start_proxy("replay", offline=True))  # without the rule the run id counts
    client = new_client()
    with pytest.raises(openai.NotFoundError):
        with_run("run-0001")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("cache_ignore_json", "metadata.run_id", "cache_ignore_json: JSON path 'metadata.run_id'"),
        ("cache_normalize", "run-(\\d+", "cache_normalize: 'run-(\\\\d+' is not a regular"),
    ],
)
def test_a_bad_rule_stops_mitmdump_with_one_line(
    tmp_path: Path, fake: FakeProvider, option: str, value: str, message: str
) -> None:
    proxy = Mitmdump(workdir=tmp_path, cache_dir=tmp_path / "cache", options={option: value})
    with pytest.raises(RuntimeError):
        proxy.start()
    assert proxy.managed is not None and proxy.managed.proc is not None
    assert proxy.managed.proc.returncode == 1
    said = [line for line in proxy.log().splitlines() if line.startswith("provider-cache:")]
    assert len(said) == 1 and said[0].startswith(f"provider-cache: {message}")
    assert "listening" not in proxy.log() and fake.requests == []
