"""The fake provider's streamed wire formats, as pure functions (tests/support/fake_provider.py).

Bedrock's AWS event stream (ConverseStream, InvokeModelWithResponseStream), OpenAI's
Responses API, Gemini (JSON, `alt=sse`, and the JSON array streamed without `alt`) and
Ollama's NDJSON, each with the faults a test asks for by model name:

* ``cut-frame``: the third event (frame, line, element) is sent half, then the connection drops.
* ``no-terminal``: the stream ends properly without its terminal event (no `metadata`
  frame, no `response.completed`, no `message_stop`, no `[DONE]`, no finishReason, no
  `"done": true`, no closing `]`).
* ``bad-crc``: one frame's message CRC is wrong (event stream).
* ``exception-frame``: a `modelStreamErrorException` frame after a few events (event stream).
* ``event-error``: an `event: error` after a few events (SSE).
* ``response-failed``: the Responses stream ends with `response.failed`.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

JSON = dict[str, Any]
CREATED = 1700000000
EVENT_STREAM_TYPE = "application/vnd.amazon.eventstream"
NDJSON_TYPE = "application/x-ndjson"
SSE_TYPE = "text/event-stream; charset=utf-8"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sse(data: JSON | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else _dumps(data).decode()
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


def pieces(answer: str) -> list[str]:
    words = answer.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


# --- AWS event stream -------------------------------------------------------------------------


def frame(headers: dict[str, str], payload: bytes, *, bad_crc: bool = False) -> bytes:
    """One event-stream message: prelude, string headers, payload, message CRC32."""
    head = b"".join(
        bytes([len(n)]) + n.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for n, v in headers.items()
    )
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    crc = zlib.crc32(message) ^ (0xFFFFFFFF if bad_crc else 0)
    return message + struct.pack(">I", crc)


def event_frame(event_type: str, payload: JSON, **kw: bool) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json"}
    return frame({**headers, ":message-type": "event"}, _dumps(payload), **kw)


def exception_frame(message: str = "fake model stream error") -> bytes:
    headers = {
        ":exception-type": "modelStreamErrorException",
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, _dumps({"message": message, "originalStatusCode": 500}))


def bedrock_prompt(body: JSON) -> str:
    """The last user text of a Converse or Anthropic-on-Bedrock body."""
    for message in reversed(body.get("messages") or []):
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content or [] if isinstance(b, dict)]
        if texts:
            return " ".join(texts)
    return ""


def _usage(prompt: str, answer: str) -> JSON:
    i, o = len(prompt.split()), len(answer.split())
    return {"inputTokens": i, "outputTokens": o, "totalTokens": i + o}


def converse(prompt: str, answer: str) -> JSON:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
        "stopReason": "end_turn",
        "usage": _usage(prompt, answer),
        "metrics": {"latencyMs": 1},
    }


def converse_stream(prompt: str, answer: str, fault: str) -> list[bytes]:
    events = [
        event_frame("messageStart", {"role": "assistant"}),
        *(
            event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}})
            for p in pieces(answer)
        ),
        event_frame("contentBlockStop", {"contentBlockIndex": 0}),
        event_frame("messageStop", {"stopReason": "end_turn"}),
        event_frame("metadata", {"usage": _usage(prompt, answer), "metrics": {"latencyMs": 1}}),
    ]
    return _eventstream_fault(events, fault)


def invoke_stream(served: int, model: str, prompt: str, answer: str, fault: str) -> list[bytes]:
    """Anthropic's events, each a `chunk` frame of `{"bytes": base64(event JSON)}`."""
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in pieces(answer)
    ]
    start: JSON = {"id": f"msg_{served}", "type": "message", "role": "assistant"}
    start["model"] = model
    start |= {"content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": len(prompt.split()), "output_tokens": 1}
    metrics = {"inputTokenCount": len(prompt.split()), "outputTokenCount": len(answer.split())}
    model_events = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *deltas,
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}},
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics},
    ]
    chunks = [
        event_frame("chunk", {"bytes": base64.b64encode(_dumps(e)).decode()}) for e in model_events
    ]
    return _eventstream_fault(chunks, fault)


def _eventstream_fault(frames: list[bytes], fault: str) -> list[bytes]:
    if fault == "no-terminal":
        return frames[:-1]
    if fault == "exception-frame":
        return [*frames[:3], exception_frame()]
    if fault == "bad-crc":
        damaged = bytearray(frames[2])
        damaged[-1] ^= 0xFF
        return [*frames[:2], bytes(damaged), *frames[3:]]
    return frames


# --- OpenAI Responses --------------------------------------------------------------------------


def responses_prompt(body: JSON) -> str:
    given = body.get("input", "")
    if isinstance(given, str):
        return given
    for item in reversed(given or []):
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(c.get("text", "") for c in content if isinstance(c, dict))
    return ""


def _output_item(served: int, answer: str | None) -> JSON:
    content = [] if answer is None else [_text_part(answer)]
    status = "in_progress" if answer is None else "completed"
    item = {"type": "message", "id": f"msg_{served}", "status": status, "role": "assistant"}
    return item | {"content": content}


def _text_part(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": []}


def response_object(
    served: int, model: str, prompt: str, answer: str, status: str = "completed"
) -> JSON:
    i, o = len(prompt.split()), len(answer.split())
    done = status != "in_progress"
    return {
        "id": f"resp_{served}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "model": model,
        "output": [_output_item(served, answer)] if done else [],
        "usage": {
            "input_tokens": i,
            "output_tokens": o,
            "total_tokens": i + o,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        if done
        else None,
        "error": {"code": "server_error", "message": "fake failure"}
        if status == "failed"
        else None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
    }


def responses_stream(served: int, model: str, prompt: str, answer: str, fault: str) -> list[bytes]:
    item_id = f"msg_{served}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, JSON]] = [
        (
            "response.created",
            {"response": response_object(served, model, prompt, "", "in_progress")},
        ),
        (
            "response.in_progress",
            {"response": response_object(served, model, prompt, "", "in_progress")},
        ),
        ("response.output_item.added", {"output_index": 0, "item": _output_item(served, None)}),
        ("response.content_part.added", {**where, "part": _text_part("")}),
        *(("response.output_text.delta", {**where, "delta": p}) for p in pieces(answer)),
        ("response.output_text.done", {**where, "text": answer}),
        ("response.content_part.done", {**where, "part": _text_part(answer)}),
        ("response.output_item.done", {"output_index": 0, "item": _output_item(served, answer)}),
        ("response.completed", {"response": response_object(served, model, prompt, answer)}),
    ]
    if fault == "no-terminal":
        events = events[:-1]
    elif fault == "response-failed":
        failed = response_object(served, model, prompt, answer, "failed")
        events[-1] = ("response.failed", {"response": failed})
    elif fault == "event-error":
        error = {"code": "server_error", "message": "fake stream error", "param": None}
        events = [*events[:5], ("error", error)]
    return [
        sse({"type": name, "sequence_number": n, **data}, name)
        for n, (name, data) in enumerate(events)
    ]


# --- Gemini ------------------------------------------------------------------------------------


def gemini_prompt(body: JSON) -> str:
    for content in reversed(body.get("contents") or []):
        texts = [p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict)]
        if texts:
            return " ".join(texts)
    return ""


def gemini_chunk(served: int, model: str, text: str, finish: bool, prompt: str = "") -> JSON:
    candidate: JSON = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    chunk: JSON = {"candidates": [candidate], "modelVersion": model, "responseId": f"gem-{served}"}
    if finish:
        candidate["finishReason"] = "STOP"
        i, o = len(prompt.split()), len(text.split())
        chunk["usageMetadata"] = {
            "promptTokenCount": i,
            "candidatesTokenCount": o,
            "totalTokenCount": i + o,
        }
    return chunk


def gemini_chunks(served: int, model: str, prompt: str, answer: str, fault: str) -> list[JSON]:
    parts = pieces(answer)
    return [
        gemini_chunk(served, model, p, n == len(parts) - 1 and fault != "no-terminal", prompt)
        for n, p in enumerate(parts)
    ]


def gemini_array(chunks: list[JSON], fault: str) -> list[bytes]:
    """The array in pieces as Gemini sends it: `[{…}`, `,\\r\\n{…}`, …, `]`."""
    out = [(b"[" if n == 0 else b",\r\n") + _dumps(c) for n, c in enumerate(chunks)]
    return out if fault == "no-terminal" else [*out, b"]"]


# --- Ollama NDJSON -----------------------------------------------------------------------------


def ollama_lines(model: str, answer: str, fault: str) -> list[bytes]:
    def line(content: str, done: bool) -> bytes:
        obj: JSON = {"model": model, "created_at": "2024-01-01T00:00:00Z"}
        obj |= {"message": {"role": "assistant", "content": content}, "done": done}
        if done:
            obj |= {"done_reason": "stop", "eval_count": len(answer.split())}
        return _dumps(obj) + b"\n"

    lines = [line(p, False) for p in pieces(answer)]
    return lines if fault == "no-terminal" else [*lines, line("", True)]
