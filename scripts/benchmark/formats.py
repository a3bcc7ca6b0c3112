"""The streamed wire formats the stream sections send to the fake provider (fake_upstream.py):
one request per format, each unique (a record-mode miss), all with the same answer length.

The fake provider answers `echo: <prompt>` one word per event (SSE event, event-stream
frame, NDJSON line, array element), so a prompt of PROMPT_WORDS words makes every format's
stream about as long as the hit path's 30-event SSE answer; the request number has a fixed
width, so every answer of one format has the same size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmark.net import Target

PROMPT_WORDS = 27
_WORDS = ("please", "answer", "in", "plain", "words", "about", "the", "weather")

Body = Callable[[str], dict]


@dataclass(frozen=True)
class Format:
    name: str
    path: str
    body: Body


def prompt(n: int) -> str:
    filler = (_WORDS * PROMPT_WORDS)[: PROMPT_WORDS - 2]
    return " ".join(("request", f"{n:09d}", *filler))


def _chat(text: str) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "stream": True}


def _responses(text: str) -> dict:
    return {"model": "gpt-4o-mini", "input": text, "stream": True}


def _anthropic(text: str) -> dict:
    messages = [{"role": "user", "content": text}]
    return {"model": "claude-3-5-haiku", "max_tokens": 256, "messages": messages, "stream": True}


def _gemini(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def _converse(text: str) -> dict:
    return {"messages": [{"role": "user", "content": [{"text": text}]}]}


def _invoke(text: str) -> dict:
    messages = [{"role": "user", "content": text}]
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256, "messages": messages}


def _ollama(text: str) -> dict:
    return {"model": "llama3.2", "messages": [{"role": "user", "content": text}]}


GEMINI = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
BEDROCK = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0"
CONVERSE = Format("Bedrock ConverseStream", f"{BEDROCK}/converse-stream", _converse)
FORMATS: tuple[Format, ...] = (
    Format("OpenAI chat (SSE)", "/v1/chat/completions", _chat),
    Format("OpenAI Responses (SSE)", "/v1/responses", _responses),
    Format("Anthropic (SSE)", "/v1/messages", _anthropic),
    Format("Gemini (SSE)", f"{GEMINI}?alt=sse", _gemini),
    Format("Gemini (JSON array)", GEMINI, _gemini),
    CONVERSE,
    Format(
        "Bedrock InvokeModelWithResponseStream", f"{BEDROCK}/invoke-with-response-stream", _invoke
    ),
    Format("Ollama (NDJSON)", "/api/chat", _ollama),
)

#: Headers as an SDK sends them, without an SDK's own (the key ignores those anyway).
HEADERS: tuple[tuple[str, str], ...] = (
    ("accept", "*/*"),
    ("content-type", "application/json"),
    ("authorization", "Bearer sk-bench-placeholder"),
    ("connection", "keep-alive"),
)


def target(fmt: Format, upstream_port: int, ca: Path) -> Target:
    """Requests of `fmt` to the fake provider (the proxy's port is filled in per proxy)."""
    return Target(0, "127.0.0.1", upstream_port, ca, fmt.path, HEADERS)


def bodies(fmt: Format, counter: Callable[[], int]) -> Callable[[], bytes]:
    """Unique request bodies of `fmt`, numbered by `counter`."""
    return lambda: json.dumps(fmt.body(prompt(counter())), separators=(",", ":")).encode()
