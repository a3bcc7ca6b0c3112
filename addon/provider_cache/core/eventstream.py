"""AWS event streams (`application/vnd.amazon.eventstream`): Bedrock's streamed answers (SPEC §4).

Each message is a frame: a 12-byte prelude (total length, headers length, the CRC32 of
those 8 bytes), typed headers, a payload, and the CRC32 of everything before it. Frames
are checked as they arrive; after a bad CRC or a length no frame can have, nothing that
follows can be trusted, so the stream is undecodable.

A stream is complete when it ends on a frame boundary, no frame was an exception (or an
error), and its operation's terminal event was the last:
- ConverseStream (`…/converse-stream`): the `metadata` event (usage, after `messageStop`);
- InvokeModelWithResponseStream (`…/invoke-with-response-stream`): a `chunk` whose model
  payload ends the answer — Anthropic's `message_stop`, or, for any model, the
  `amazon-bedrock-invocationMetrics` that Bedrock adds to the last chunk of every stream.
On another path, a stream that ended properly on a frame boundary is complete.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib

from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR, UNDECODABLE

PRELUDE = struct.Struct(">III")  # total length, headers length, prelude CRC32
CRC = struct.Struct(">I")
#: The smallest frame: prelude and message CRC, no headers, no payload.
MIN_FRAME = PRELUDE.size + CRC.size
#: The largest frame botocore accepts (its _MAX_HEADERS_LENGTH and _MAX_PAYLOAD_LENGTH).
MAX_HEADERS = 128 * 1024
MAX_FRAME = MIN_FRAME + MAX_HEADERS + 24 * 1024 * 1024

#: Header value sizes by type code; 6 (bytes) and 7 (string) carry a 2-byte length instead.
_FIXED_SIZES = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
_VARIABLE = (6, 7)

CONVERSE = "converse-stream"
INVOKE = "invoke-with-response-stream"
#: The key Bedrock adds to the last chunk of every InvokeModelWithResponseStream answer.
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"


def operation_for(path: str) -> str:
    """The Bedrock streaming operation a path names, or "" for another event stream."""
    bare = path.partition("?")[0]
    return next((op for op in (CONVERSE, INVOKE) if bare.endswith("/" + op)), "")


def parse_headers(raw: bytes) -> dict[str, object]:
    """A frame's headers; ValueError when they do not parse."""
    headers: dict[str, object] = {}
    pos, end = 0, len(raw)
    while pos < end:
        size = raw[pos]
        if pos + 1 + size >= end:
            raise ValueError("a header without its type")
        name = bytes(raw[pos + 1 : pos + 1 + size]).decode("utf-8", "strict")
        pos += 1 + size
        kind = raw[pos]
        pos += 1
        if kind in _VARIABLE:
            if pos + 2 > end:
                raise ValueError("a header value without its length")
            (length,) = struct.unpack_from(">H", raw, pos)
            pos += 2
            value: object = bytes(raw[pos : pos + length])
            if kind == 7:
                value = bytes(raw[pos : pos + length]).decode("utf-8", "strict")
        elif kind in _FIXED_SIZES:
            length = _FIXED_SIZES[kind]
            value = bytes(raw[pos : pos + length]) if length else kind == 0
        else:
            raise ValueError(f"unknown header type {kind}")
        pos += length
        if pos > end:
            raise ValueError("a header value past the headers")
        headers[name] = value
    return headers


class EventStreamChecker:
    """Frames checked as they pass; the last event kept to judge the end."""

    def __init__(self, operation: str = "") -> None:
        self.operation = operation
        self.buffer = bytearray()
        self.frames = 0
        self.broken = False
        self.failed = False
        self.last_event = ""
        self.last_payload = b""

    def feed(self, chunk: bytes) -> None:
        if self.broken:
            return
        self.buffer += chunk
        try:
            while self._take_frame():
                pass
        except ValueError:
            self.broken = True
            self.buffer.clear()

    def _take_frame(self) -> bool:
        """Check and drop one whole frame from the buffer; False when none is whole yet."""
        buffer = self.buffer
        if len(buffer) < PRELUDE.size:
            return False
        total, headers_length, prelude_crc = PRELUDE.unpack_from(buffer)
        if zlib.crc32(memoryview(buffer)[:8]) != prelude_crc:
            raise ValueError("bad prelude CRC")
        if headers_length > MAX_HEADERS or not MIN_FRAME + headers_length <= total <= MAX_FRAME:
            raise ValueError("impossible frame lengths")
        if len(buffer) < total:
            return False
        with memoryview(buffer) as view:
            (message_crc,) = CRC.unpack_from(view, total - CRC.size)
            if zlib.crc32(view[: total - CRC.size]) != message_crc:
                raise ValueError("bad message CRC")
            # Copies: a view still exported (by a parse error's traceback) would stop feed()
            # from clearing the buffer (BufferError out of the response hook).
            raw_headers = bytes(view[PRELUDE.size : PRELUDE.size + headers_length])
            payload = bytes(view[PRELUDE.size + headers_length : total - CRC.size])
        headers = parse_headers(raw_headers)
        del buffer[:total]
        self.frames += 1
        self._frame(headers, payload)
        return True

    def _frame(self, headers: dict[str, object], payload: bytes) -> None:
        kind = headers.get(":message-type")
        if kind in ("exception", "error"):
            self.failed = True
        elif kind == "event":
            self.last_event = str(headers.get(":event-type", ""))
            self.last_payload = payload

    def verdict(self, ended: bool) -> str | None:
        """None when complete; else why not. `ended`: the stream ended properly."""
        if self.broken:
            return UNDECODABLE
        if self.failed:
            return STREAM_ERROR
        if self.buffer:
            return CUT_SHORT  # mid-frame
        if self._last_is_terminal():
            return None
        if not ended:
            return CUT_SHORT
        return INCOMPLETE if self.operation else None

    def _last_is_terminal(self) -> bool:
        if self.operation == CONVERSE:
            return self.last_event == "metadata"
        if self.operation == INVOKE:
            return self.last_event == "chunk" and _ends_the_answer(self.last_payload)
        return False


def _ends_the_answer(payload: bytes) -> bool:
    """An InvokeModelWithResponseStream chunk (`{"bytes": base64 of the model's JSON}`)
    that is the model's last."""
    try:
        envelope = json.loads(payload)
        model_event = json.loads(base64.b64decode(envelope["bytes"], validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return False
    if not isinstance(model_event, dict):
        return False
    return model_event.get("type") == "message_stop" or INVOCATION_METRICS in model_event
