"""A small application test suite that the e2e tests run behind the proxy: real openai SDK
calls configured by the environment only (HTTPS_PROXY, SSL_CERT_FILE), as a user's suite is."""

from __future__ import annotations

import sys
from pathlib import Path

SUITE = """\
import openai

client = openai.OpenAI(max_retries=0)  # configured by HTTPS_PROXY and SSL_CERT_FILE only
for prompt in {prompts!r}:
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{{"role": "user", "content": prompt}}]
    )
    print(answer.choices[0].message.content)
"""


def suite(tmp_path: Path, prompts: list[str]) -> list[str]:
    path = tmp_path / "suite.py"
    path.write_text(SUITE.format(prompts=prompts))
    return [sys.executable, str(path)]
