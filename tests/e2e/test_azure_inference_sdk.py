"""Real SDKs whose requests differ each time in ways that ask nothing (issue 13): azure-core's
fresh x-ms-client-request-id, and the cookie a provider sets and a client sends back."""

from __future__ import annotations

import openai
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ResourceNotFoundError

from tests.support import secrets
from tests.support.fake_provider import FakeProvider

#: An OpenAI-compatible endpoint the fake answers for; what matters is azure-core's headers.
ENDPOINT = "https://api.openai.com/v1"


def azure_chat(prompt: str = "name a cache") -> tuple[str | None, str]:
    """One call of a fresh client (as a test suite makes them), with its own request id."""
    answer: dict[str, str | None] = {}
    with ChatCompletionsClient(
        endpoint=ENDPOINT, credential=AzureKeyCredential(secrets.AZURE_KEY), retry_total=0
    ) as client:
        result = client.complete(
            messages=[UserMessage(content=prompt)],
            model="gpt-4o-mini",
            raw_response_hook=lambda r: answer.update(
                state=r.http_response.headers.get("x-provider-cache")
            ),
        )
    return answer["state"], result.choices[0].message.content


def test_azure_ai_inference_records_then_hits(start_proxy, use_proxy, fake: FakeProvider) -> None:
    use_proxy(start_proxy("record"))
    (s1, a1), (s2, a2) = azure_chat(), azure_chat()
    assert (s1, s2) == ("miss", "hit")
    assert a1 == a2 == "echo: name a cache"
    request_ids = {v for n, v in fake.requests[0]["headers"] if n == "x-ms-client-request-id"}
    assert len(request_ids) == 1  # azure-core sent one (a fresh UUID each call)
    assert fake.served == 1


def test_azure_ai_inference_replays_offline(start_proxy, use_proxy, fake: FakeProvider) -> None:
    use_proxy(start_proxy("record"))
    recorded = azure_chat()
    use_proxy(start_proxy("replay", offline=True))
    assert azure_chat() == ("hit", recorded[1])
    with pytest.raises(ResourceNotFoundError):
        azure_chat("another question")
    assert fake.served == 1


def test_cookies_a_provider_sets_do_not_make_hits_depend_on_order(
    start_proxy, use_proxy, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI's answers set Cloudflare's __cf_bm; the SDK keeps it and sends it with its next
    requests. Recorded one, two, three; replayed three, two, one: every one hits."""
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)
    fake.answer_headers = [("Set-Cookie", f"__cf_bm={secrets.COOKIE}; path=/; HttpOnly; Secure")]

    def ask(client: openai.OpenAI, prompt: str) -> str | None:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
        )
        return raw.headers.get("x-provider-cache")

    use_proxy(start_proxy("record"))
    with openai.OpenAI(max_retries=0) as client:
        assert [ask(client, p) for p in ("one", "two", "three")] == ["miss"] * 3
    assert any(n.lower() == "cookie" for n, _ in fake.requests[-1]["headers"])

    use_proxy(start_proxy("replay", offline=True))
    with openai.OpenAI(max_retries=0) as client:
        assert [ask(client, p) for p in ("three", "two", "one")] == ["hit"] * 3
    assert fake.served == 3
