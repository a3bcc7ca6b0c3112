"""Undoing a streamed answer's content coding chunk by chunk, for its completeness check.

mitmproxy hands the stream's chunks over still content-encoded (a gzipped SSE stream, as
some gateways send); the check must read what the client's SDK will read. At most
`limit` bytes are decoded: past that the answer is too large to store anyway.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # the backport, declared for Pythons before 3.14 (pyproject.toml)
    from backports import zstd


class DecodeError(ValueError):
    """The bytes do not decode as their content coding says."""


class Overflow(ValueError):
    """They decode to more than the limit."""


class StreamDecoder:
    """gzip (members back to back), deflate (zlib-wrapped or raw), br, zstd."""

    def __init__(self, new: Callable[[], object], limit: int) -> None:
        self.new = new
        self.stream: object = new()
        self.limit = limit
        self.size = 0

    def decode(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""  # nothing to decode (and zstd raises EOFError past a frame's end)
        try:
            out = self._decode(chunk)
        except (zlib.error, brotli.error, zstd.ZstdError) as e:
            raise DecodeError(str(e)) from None
        self.size += len(out)
        if self.size > self.limit:
            raise Overflow(f"decodes to more than {self.limit} bytes")
        return out

    def _decode(self, chunk: bytes) -> bytes:
        room = self.limit - self.size + 1
        stream = self.stream
        if isinstance(stream, brotli.Decompressor):
            return stream.process(chunk, output_buffer_limit=room)
        if stream.eof:  # type: ignore[attr-defined]
            # The last chunk ended exactly at a member's (frame's) end: this one starts the
            # next. (zstd raises EOFError, no ZstdError, when fed past a frame's end.)
            stream = self.stream = self.new()
        out = stream.decompress(chunk, room)  # type: ignore[attr-defined]
        if stream.eof and stream.unused_data:  # type: ignore[attr-defined]
            self.stream = self.new()  # the next gzip member or zstd frame
            out += self._decode(stream.unused_data)  # type: ignore[attr-defined]
        return out


class _Deflate:
    """zlib-wrapped as RFC 9110 says, or raw as some servers send it: told by the first bytes."""

    def __init__(self) -> None:
        self.stream: zlib._Decompress | None = None
        self.head = b""  # the first byte, while it came alone: the wrapping takes two
        self.eof = False
        self.unused_data = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self.stream is None:
            data, self.head = self.head + data, b""
            if len(data) < 2:
                self.head = data
                return b""
            wrapped = (data[0] * 256 + data[1]) % 31 == 0 and data[0] & 15 == 8
            self.stream = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        out = self.stream.decompress(data, max_length)
        self.eof, self.unused_data = self.stream.eof, self.stream.unused_data
        return out


_CODINGS: dict[str, Callable[[], object]] = {
    "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    "x-gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    "deflate": _Deflate,
    "br": brotli.Decompressor,
    "zstd": zstd.ZstdDecompressor,
}


def decoder_for(encoding: str, limit: int) -> StreamDecoder | None:
    """None for an identity coding; DecodeError for one not understood (or several)."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in _CODINGS:
        raise DecodeError(f"content-encoding {encoding!r} is not understood")
    return StreamDecoder(_CODINGS[coding], limit)
