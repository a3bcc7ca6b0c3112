"""A JSON array streamed in pieces: Gemini's `streamGenerateContent` without `alt` (SPEC §4).

The answer is `[{…},\\r\\n{…}]`, one element per chunk of the answer. Nothing in it says
"complete" before its closing `]`, so the checker keeps the pieces as they pass (the
recorder holds them anyway) and parses the whole array once, at the end, with the C JSON
parser: ten times cheaper than following every bracket and quote in Python as they pass
(scripts/bench.py, stream-checks). Where the parser stopped tells a truncated array (it
ran out of input: cut short, or ended without its `]`) from a broken one (anything
else: a trailing comma, bytes after the `]`). A complete array is an answer unless its
last element is an `{"error": …}`, as Gemini sends when it fails mid-stream.
"""

from __future__ import annotations

import json

from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR, UNDECODABLE


class JSONArrayChecker:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self.pieces.append(chunk)

    def verdict(self, ended: bool) -> str | None:
        """None when complete; else why not. `ended`: the stream ended properly."""
        truncated = INCOMPLETE if ended else CUT_SHORT
        data = b"".join(self.pieces)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:  # cut inside a character, or not UTF-8 at all
            return truncated if e.end == len(data) and not ended else UNDECODABLE
        try:
            array = json.loads(text)
        except json.JSONDecodeError as e:  # out of input at the end, or inside a string
            out_of_input = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
            return truncated if out_of_input else UNDECODABLE
        except RecursionError:
            return UNDECODABLE
        if not isinstance(array, list):
            return UNDECODABLE
        if array and isinstance(array[-1], dict) and "error" in array[-1]:
            return STREAM_ERROR
        return None
