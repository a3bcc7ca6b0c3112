"""A JSON array streamed in pieces: Gemini's `streamGenerateContent` without `alt` (SPEC §4).

The answer is `[{…},\\r\\n{…}]`, one element per chunk of the answer. A scanner that knows
strings (and their escapes) and brackets follows it as it passes, jumping from one
significant byte to the next with a regex, so that each byte is looked at once; the
whole body is never parsed again and again. The answer is complete when the closing `]`
of the array came (only white space after it) and its last element parses — unless that
element is an `{"error": …}`, as Gemini sends when it fails mid-stream.
"""

from __future__ import annotations

import json
import re

from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR, UNDECODABLE

_SIGNIFICANT = re.compile(rb'["\[\]{},]')
_STRING_END = re.compile(rb'["\\]')
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
_CLOSES = {ord("]"): ord("["), ord("}"): ord("{")}


class JSONArrayChecker:
    def __init__(self) -> None:
        self.opened = False  # the array's `[` came
        self.closed = False  # and its `]`
        self.broken = False
        self.stack = bytearray()  # the open brackets, the array's first
        self.in_string = False
        self.escaped = False  # a backslash inside a string ended the last chunk
        #: The bytes of the array's current (at the end: last) element.
        self.element = bytearray()

    def feed(self, chunk: bytes) -> None:
        pos = self._open(chunk) if not self.opened and not self.broken else 0
        if self.broken:
            return
        start = pos  # where this chunk's part of the current element begins
        while pos < len(chunk) and not self.closed:
            if self.in_string:
                pos = self._in_string(chunk, pos)
                continue
            found = _SIGNIFICANT.search(chunk, pos)
            if found is None:
                break
            pos = found.end()
            if self.stack == b"[" and found[0] in (b",", b"]"):  # the end of an element
                if found[0] == b",":
                    self.element = bytearray()
                else:
                    self.element += chunk[start : found.start()]
                start = pos
            if not self._significant(found[0][0]):
                self.broken = True
                return
        if self.closed:
            self.broken = _NOT_SPACE.search(chunk, pos) is not None
        else:
            self.element += chunk[start:]

    def _open(self, chunk: bytes) -> int:
        """The position after the array's `[`, or len(chunk) while only white space came."""
        first = _NOT_SPACE.search(chunk)
        if first is None:
            return len(chunk)
        if chunk[first.start()] != ord("["):
            self.broken = True
            return len(chunk)
        self.opened = True
        self.stack.append(ord("["))
        return first.end()

    def _in_string(self, chunk: bytes, pos: int) -> int:
        if self.escaped:
            self.escaped = False
            return pos + 1
        found = _STRING_END.search(chunk, pos)
        if found is None:
            return len(chunk)
        if found[0] == b'"':
            self.in_string = False
            return found.end()
        if found.end() == len(chunk):
            self.escaped = True
        return found.end() + 1

    def _significant(self, byte: int) -> bool:
        """Follow one bracket, quote or comma; False when the brackets do not match."""
        if byte == ord('"'):
            self.in_string = True
        elif byte in (ord("["), ord("{")):
            self.stack.append(byte)
        elif byte in _CLOSES:
            if not self.stack or self.stack[-1] != _CLOSES[byte]:
                return False
            self.stack.pop()
            self.closed = not self.stack
        return True

    def verdict(self, ended: bool) -> str | None:
        """None when complete; else why not. `ended`: the stream ended properly."""
        if self.broken:
            return UNDECODABLE
        if not self.closed:
            return INCOMPLETE if ended else CUT_SHORT
        if not self.element.strip():
            return None  # `[]`
        try:
            last = json.loads(self.element)
        except ValueError:
            return UNDECODABLE
        if isinstance(last, dict) and "error" in last:
            return STREAM_ERROR
        return None
