"""Newline-delimited JSON streams (`application/x-ndjson`, Ollama style) (SPEC §4).

One JSON object a line; the answer's last line says `"done": true`, and an error comes
as a line with an `error` field. Only the last line decides, so only the last complete
line is kept (and parsed once, at the end).
"""

from __future__ import annotations

import json

from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR, UNDECODABLE


class NDJSONChecker:
    def __init__(self) -> None:
        #: The bytes after the last newline: the start of a line still coming.
        self.partial = bytearray()
        self.last_line = b""

    def feed(self, chunk: bytes) -> None:
        head, newline, tail = chunk.rpartition(b"\n")
        if not newline:
            self.partial += chunk
            return
        lines = (bytes(self.partial) + head).rstrip()
        if lines:
            self.last_line = lines[lines.rfind(b"\n") + 1 :]
        self.partial = bytearray(tail)

    def verdict(self, ended: bool) -> str | None:
        """None when complete; else why not. `ended`: the stream ended properly."""
        line = self.last_line
        if self.partial.strip():
            if not ended:
                return CUT_SHORT  # a line cut midway
            line = bytes(self.partial)  # a last line without its newline counts
        if not line.strip():
            return INCOMPLETE if ended else CUT_SHORT
        try:
            last = json.loads(line)
        except ValueError:
            return UNDECODABLE
        if not isinstance(last, dict):
            return UNDECODABLE
        if last.get("error"):
            return STREAM_ERROR
        if last.get("done") is True:
            return None
        return INCOMPLETE if ended else CUT_SHORT
