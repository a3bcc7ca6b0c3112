"""Canonical request bodies for the key: decompressed, JSON canonicalised, multipart by parts.

Pure functions; a body that cannot be parsed as what its content type claims is
keyed by its raw bytes rather than rejected, so bad input is still cacheable.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from email.message import Message
from email.utils import collapse_rfc2231_value
from itertools import chain, repeat
from operator import itemgetter
from typing import Protocol, cast
from urllib.parse import parse_qsl, unquote_plus

import brotli
import msgpack

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # the backport, declared for Pythons before 3.14 (pyproject.toml)
    from backports import zstd

_BOUNDARY = re.compile(r";\s*boundary=(\"[^\"]*\"|[^;]*)", re.IGNORECASE)


def strip_boundary(content_type: str) -> str:
    """Drop the random multipart boundary from a content type."""
    return _BOUNDARY.sub("", content_type)


def is_json_type(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


FORM_TYPE = "application/x-www-form-urlencoded"
#: What a secret form value becomes in the key and where stored (core/keys.py's REDACTED,
#: percent-encoded as a form value is).
FORM_REDACTED = b"%3Credacted%3E"


def is_form_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == FORM_TYPE


def _form_text(data: bytes) -> str:
    """Form bytes as text the way a query is read (core/redact.py): UTF-8, an undecodable
    byte a lone surrogate, so that a decoded value is the text the client sent."""
    return data.decode("utf-8", "surrogateescape")


def _form_name(field: bytes) -> str:
    return unquote_plus(_form_text(field), errors="surrogateescape")


def form_secret_values(body: bytes, is_secret: Callable[[str], bool]) -> dict[str, list[str]]:
    """The values of a form body's secret fields, decoded, by field name (a form body is
    `name=value&…`, percent-encoded, as an OAuth token request sends its client secret)."""
    found: dict[str, list[str]] = {}
    for name, value in parse_qsl(
        _form_text(body), keep_blank_values=True, errors="surrogateescape"
    ):
        if value and is_secret(name):
            found.setdefault(name, []).append(value)
    return found


def redact_form(body: bytes, is_secret: Callable[[str], bool]) -> bytes:
    """The form body with each secret field's value replaced by the marker, every other
    byte as sent (so a body without secrets is returned as it is, and keys as before)."""
    if b"=" not in body:
        return body
    fields = body.split(b"&")
    changed = False
    for n, field in enumerate(fields):
        name, eq, value = field.partition(b"=")
        if eq and value and is_secret(_form_name(name)):
            fields[n] = name + eq + FORM_REDACTED
            changed = True
    return b"&".join(fields) if changed else body


# --- content codings -------------------------------------------------------------------------


#: The most a body may decode to when no other limit is given (the key of a request):
#: a compression bomb of a few hundred KB must not become a gigabyte in memory.
DECODE_LIMIT = 64 << 20


class TooLarge(ValueError):
    """A body that decodes to more than the limit; decoding stopped there."""


def _check(out: bytes, limit: int) -> bytes:
    if len(out) > limit:
        raise TooLarge(f"decodes to more than {limit} bytes")
    return out


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    """One complete zlib/gzip/raw-deflate stream, or None if it is cut off or followed by more.

    The one-shot decoders accept a truncated stream or trailing bytes, which would let a
    damaged body key like the intact one.
    """
    stream = zlib.decompressobj(wbits)
    out = _check(stream.decompress(data, limit + 1), limit)
    return out if stream.eof and not stream.unused_data else None


class _Decoder(Protocol):
    """zlib's decompressobj and zstd's ZstdDecompressor: the same streaming interface."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


def _concatenated(data: bytes, limit: int, decoder: Callable[[], _Decoder]) -> bytes | None:
    """One or more complete members (gzip) or frames (zstd) back to back, at most `limit`
    bytes in all; None if one is cut off."""
    out: list[bytes] = []
    size = 0
    while data:
        stream = decoder()
        member = _check(stream.decompress(data, limit - size + 1), limit - size)
        if not stream.eof:
            return None
        out.append(member)
        size += len(member)
        data = stream.unused_data
    return b"".join(out)


def _gunzip(data: bytes, limit: int) -> bytes | None:
    """A gzip body: one or more complete members (RFC 1952), each checked by its CRC."""
    return _concatenated(data, limit, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))


def _deflate(data: bytes, limit: int) -> bytes | None:
    """A deflate body: zlib-wrapped as RFC 9110 says, or raw as some clients send it."""
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
        try:
            out = _inflate(data, wbits, limit)
        except zlib.error:
            continue
        if out is not None:
            return out
    return None


def _unbrotli(data: bytes, limit: int) -> bytes | None:
    decoder = brotli.Decompressor()
    try:
        out = _check(decoder.process(data, output_buffer_limit=limit + 1), limit)
    except brotli.error:
        return None
    return out if decoder.is_finished() else None


def _unzstd(data: bytes, limit: int) -> bytes | None:
    """One or more complete zstd frames; a cut or damaged frame is None."""
    try:
        return _concatenated(data, limit, zstd.ZstdDecompressor)
    except zstd.ZstdError:
        return None


#: The HTTP content codings understood (RFC 9110 §8.4.1; x-gzip is gzip's registered alias).
#: A Python codec name such as rot13 or utf-8 is not one and must not reach `codecs`.
_DECODERS: dict[str, Callable[[bytes, int], bytes | None]] = {
    "identity": lambda data, limit: _check(data, limit),
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _deflate,
    "br": _unbrotli,
    "zstd": _unzstd,
}


def decode_content(body: bytes, content_encoding: str, limit: int = DECODE_LIMIT) -> bytes | None:
    """Undo a Content-Encoding (a list is undone last coding first); None if it cannot be.

    Raises TooLarge when the decoded body would exceed `limit` bytes: the decoders stop
    there instead of inflating a compression bomb.
    """
    decoders = []
    for coding in reversed(content_encoding.split(",")):
        coding = coding.strip().lower()
        if coding:
            decoder = _DECODERS.get(coding)
            if decoder is None:
                return None
            decoders.append(decoder)
    for decoder in decoders:
        if not body:  # as mitmproxy: an empty body is empty in every coding
            return body
        try:
            decoded = decoder(body, limit)
        except zlib.error:
            return None
        if decoded is None:
            return None
        body = decoded
    return body


def canonical_body(
    body: bytes,
    headers: dict[str, str],
    decoder: json.JSONDecoder | None = None,
    form_secret: Callable[[str], bool] | None = None,
) -> tuple[bytes, str]:
    """The body as keyed, and what kind of canonical form it got (a body that would decode
    past DECODE_LIMIT is keyed by its encoded bytes; `decoder`: canonical_json's;
    `form_secret`: the fields of a form body whose values count by presence)."""
    try:
        decoded = decode_content(body, headers.get("content-encoding", ""))
    except TooLarge:
        decoded = None
    if decoded is None:
        return body, "raw-encoded"
    content_type = headers.get("content-type", "")
    if is_json_type(content_type):
        canonical = canonical_json(decoded, decoder)
        if canonical is not None:
            return canonical, "json"
    elif content_type.lower().startswith("multipart/"):
        parts = canonical_multipart(decoded, content_type)
        if parts is not None:
            return parts, "multipart"
    elif form_secret is not None and is_form_type(content_type):
        return redact_form(decoded, form_secret), "raw"  # keyed as sent, but for its secrets
    return decoded, "raw"


# --- JSON ------------------------------------------------------------------------------------

#: Deeper JSON is keyed by its raw bytes. A fixed limit, well below the C parser's own (it
#: nests on the C stack, 1500 levels in 3.12, shared with the caller), makes the key
#: independent of how deep in the stack it is computed; no real request nests near it.
MAX_JSON_DEPTH = 512


class _Number(str):
    """A JSON number kept as its exact source text (1.0 stays 1.0, 1e400 stays 1e400)."""


class _Object(list):
    """A JSON object as its (key, value) pairs sorted by key; duplicates are kept."""


_first = itemgetter(0)


def _object(pairs: list[tuple[str, object]]) -> _Object:
    return _Object(sorted(pairs, key=_first))


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object,
    parse_float=_Number,
    parse_int=_Number,
    parse_constant=_Number,
)
#: Distinct field names json_decoder remembers as no secret (they come off the wire).
KNOWN_FIELDS = 4096


def json_decoder(is_secret: Callable[[str], bool], marker: str) -> json.JSONDecoder:
    """A decoder for canonical_json that puts `marker` in place of the string value of every
    field whose name is_secret, at any depth, so that such a value counts by its presence.

    The names of an object are first looked up together in the set of names known to be no
    secret (one C-level pass): the usual object costs no call of `is_secret` at all.
    """
    plain: set[str] = set()

    def redacted(pairs: list[tuple[str, object]]) -> _Object:
        if not plain.issuperset(map(_first, pairs)):
            kept = []
            for name, value in pairs:
                if name not in plain:
                    if not is_secret(name):
                        if len(plain) < KNOWN_FIELDS:
                            plain.add(name)
                    elif type(value) is str:  # not a _Number, an object or a list
                        value = marker
                kept.append((name, value))
            pairs = kept
        return _Object(sorted(pairs, key=_first))

    return json.JSONDecoder(
        object_pairs_hook=redacted,
        parse_float=_Number,
        parse_int=_Number,
        parse_constant=_Number,
    )


#: What json.dumps(s, ensure_ascii=False) does for a string, without its per-call overhead.
_encode_string: Callable[[str], str] = json.encoder.encode_basestring


def _quote(value: str) -> str:
    """_encode_string for a string that needs no escape: just the quotes."""
    return f'"{value}"'


def canonical_json(data: bytes, decoder: json.JSONDecoder | None = None) -> bytes | None:
    """Sorted keys, no insignificant white space, numbers exactly as written; None if not JSON.

    `decoder`: one from json_decoder, to key secret fields by their presence.

    Also None when nested deeper than MAX_JSON_DEPTH: either the parser's RecursionError
    (which depends on the caller's stack) or, for every body it does parse, _dump says so.

    Without a backslash in the text no parsed string can hold a character that JSON escapes:
    `"` ends a string, and the strict parser rejects raw control characters. Such strings
    are then written back between quotes as they are, which gives the same text as
    _encode_string and saves most of the cost of a typical request (long prompt strings).
    """
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does
        encode = _encode_string if "\\" in text else _quote
        canonical = _dump((decoder or _DECODER).decode(text), encode)
        return None if canonical is None else canonical.encode()
    except (ValueError, RecursionError):
        return None


_LITERALS = {True: "true", False: "false", None: "null"}


def _dump(root: object, encode: Callable[[str], str] = _encode_string) -> str | None:
    """The canonical text of a parsed value; None if it nests deeper than MAX_JSON_DEPTH.

    Written with an explicit stack: recursion would make whether a body can be canonicalised
    depend on the caller's stack depth, and so change its key between call paths.
    """
    out: list[str] = []
    stack: list[tuple[Iterator[tuple[str, object]], str]] = [(iter((("", root),)), "")]
    while stack:
        members, closer = stack[-1]
        for prefix, value in members:
            out.append(prefix)
            if isinstance(value, _Number):
                out.append(value)
            elif isinstance(value, str):
                out.append(encode(value))
            elif isinstance(value, list):
                if len(stack) > MAX_JSON_DEPTH:
                    return None
                stack.append(_members(value, out, encode))
                break
            else:
                out.append(_LITERALS[value])  # type: ignore[index]
        else:
            out.append(closer)
            stack.pop()
    return "".join(out)


def _members(
    value: list, out: list[str], encode: Callable[[str], str]
) -> tuple[Iterator[tuple[str, object]], str]:
    """Open an array or object in `out`; its members with the text due before each."""
    if isinstance(value, _Object):
        out.append("{")
        keys = [f",{encode(k)}:" for k, _ in value]
        if keys:
            keys[0] = keys[0][1:]
        return zip(keys, [v for _, v in value], strict=True), "}"
    out.append("[")
    return zip(chain(("",), repeat(",")), value, strict=False), "]"


# --- multipart -------------------------------------------------------------------------------


class _RawHeaderPolicy(email.policy.Compat32):
    """Header values as received, only unfolded.

    The email package's own policies decode 8-bit header bytes that are not UTF-8 to U+FFFD,
    so two part names differing only in such bytes would share a key; here they stay lone
    surrogates (the parser reads headers as ASCII with surrogateescape).
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value.replace("\r", "").replace("\n", "")


_PARSER = email.parser.BytesParser(policy=_RawHeaderPolicy())


def _param_text(value: str | tuple[str | None, str | None, str]) -> str:
    """A parameter value as text: RFC 2231 values in their charset, others as UTF-8.

    Bytes that do not decode become lone surrogates rather than U+FFFD, so that distinct
    bytes stay distinct.
    """
    if isinstance(value, tuple):  # (charset, language, value with 8-bit bytes as surrogates)
        charset, language, text = value
        text = text.encode("latin-1", "surrogateescape").decode("latin-1")
        return collapse_rfc2231_value((charset, language, text), errors="surrogateescape")
    raw = collapse_rfc2231_value(value).encode("latin-1", "surrogateescape")
    return raw.decode("utf-8", "surrogateescape")


def _part(part: Message) -> list[object] | None:
    """One part as [name, filename, content type, payload]; None if it cannot be canonical.

    The content type is kept whole (unfolded), charset included: the same bytes declared in
    two charsets are two different texts to the server. A nested multipart, or a part whose
    headers or transfer encoding are defective, has no canonical form here.
    """
    if part.is_multipart():
        return None
    name = part.get_param("name", "", header="content-disposition")
    filename = part.get_param("filename", None, header="content-disposition")
    if filename is None:
        filename = part.get_param("name", "", header="content-type")
    content_type = part.get("content-type")
    payload = part.get_payload(decode=True) or b""
    if part.defects:
        return None
    return [
        _param_text(name),
        _param_text(filename).strip(),
        part.get_default_type() if content_type is None else content_type.strip(),
        payload,
    ]


def canonical_multipart(data: bytes, content_type: str) -> bytes | None:
    """The parts in order (name, filename, type, payload), independent of the boundary."""
    if not _BOUNDARY.search(content_type):
        return None
    head = b"Content-Type: " + content_type.encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    message = _PARSER.parsebytes(head + data)
    if not message.is_multipart() or message.defects:
        return None
    try:
        # multipart (checked above): the payload is the list of sub-Messages the parser made
        parts = [_part(part) for part in cast("list[Message]", message.get_payload())]
    except ValueError:  # a part name in a charset it does not decode in
        return None
    if None in parts:
        return None
    return msgpack.packb(parts, use_bin_type=True, unicode_errors="surrogatepass")
