"""Canonical request bodies for the key: decompressed, JSON canonicalised, multipart by parts.

Pure functions; a body that cannot be parsed as what its content type claims is
keyed by its raw bytes rather than rejected, so bad input is still cacheable.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from email.utils import collapse_rfc2231_value

import msgpack
from mitmproxy.net import encoding

_BOUNDARY = re.compile(r";\s*boundary=(\"[^\"]*\"|[^;]*)", re.IGNORECASE)


def strip_boundary(content_type: str) -> str:
    """Drop the random multipart boundary from a content type."""
    return _BOUNDARY.sub("", content_type)


def is_json_type(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def decode_content(body: bytes, content_encoding: str) -> bytes | None:
    """Decode a content-encoded body (gzip, deflate, br, zstd); None if it cannot be."""
    if not content_encoding or content_encoding.strip().lower() == "identity":
        return body
    try:
        return encoding.decode(body, content_encoding.strip().lower())
    except ValueError:
        return None


def canonical_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, str]:
    """The body as keyed, and what kind of canonical form it got."""
    decoded = decode_content(body, headers.get("content-encoding", ""))
    if decoded is None:
        return body, "raw-encoded"
    content_type = headers.get("content-type", "")
    if is_json_type(content_type):
        canonical = canonical_json(decoded)
        if canonical is not None:
            return canonical, "json"
    elif content_type.lower().startswith("multipart/"):
        parts = canonical_multipart(decoded, content_type)
        if parts is not None:
            return parts, "multipart"
    return decoded, "raw"


class _Number(str):
    """A JSON number kept as its exact source text (1.0 stays 1.0, 1e400 stays 1e400)."""


class _Object(list):
    """A JSON object as its (key, value) pairs sorted by key; duplicates are kept."""


def _object(pairs: list[tuple[str, object]]) -> _Object:
    return _Object(sorted(pairs, key=lambda kv: kv[0]))


def canonical_json(data: bytes) -> bytes | None:
    """Sorted keys, no insignificant white space, numbers exactly as written; None if not JSON."""
    try:
        value = json.loads(
            data,
            object_pairs_hook=_object,
            parse_float=_Number,
            parse_int=_Number,
            parse_constant=_Number,
        )
        return _dump(value).encode()
    except (ValueError, RecursionError):
        return None


def _dump(value: object) -> str:
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, _Object):
        return (
            "{"
            + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_dump(v)}" for k, v in value)
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)  # True, False, None


def canonical_multipart(data: bytes, content_type: str) -> bytes | None:
    """The parts in order (name, filename, type, payload), independent of the boundary."""
    if not _BOUNDARY.search(content_type):
        return None
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    head = b"Content-Type: " + content_type.encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    message = parser.parsebytes(head + data)
    if not message.is_multipart() or message.defects:
        return None
    parts = [
        [
            collapse_rfc2231_value(part.get_param("name", "", header="content-disposition")),
            part.get_filename() or "",
            part.get_content_type(),
            part.get_payload(decode=True) or b"",
        ]
        for part in message.iter_parts()
    ]
    return msgpack.packb(parts, use_bin_type=True)
