"""The remote tier's objects (SPEC §11): where an entry lives in a bucket, and its envelope.

A remote object is read on another machine, perhaps written by another version or by
someone else entirely, so nothing in it is trusted until checked: it must decode, name the
key that was asked for, and carry the digest of the entry it wraps. Pure: no boto3.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import msgpack

from provider_cache.core import records
from provider_cache.core.keys import KEY_VERSION

#: The envelope's own schema version; the entry inside has its own (records.SCHEMA).
OBJECT_VERSION = 1
#: What cache_key returns: a SHA-256 in lower-case hex.
_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
#: S3's bucket-name rules (R2, MinIO and GCS interop accept the same names).
_BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._=+-]+")
URL_FORM = "s3://BUCKET/PREFIX"


class CorruptObject(ValueError):
    """A remote object that is not a sound envelope of the entry asked for."""


@dataclass(frozen=True)
class RemoteLocation:
    """Where a cache lives: a bucket and a prefix inside it (no leading or trailing '/')."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def entries(self) -> str:
        """The folder of the entries of the current key version: `PREFIX/v1/`."""
        return self.folder(f"v{KEY_VERSION}")

    def folder(self, name: str) -> str:
        """A folder beside the entries (`probe`, later `manifests`), ending in '/'."""
        return f"{self.prefix}/{name}/" if self.prefix else f"{name}/"

    def object_name(self, key: str) -> str:
        """`PREFIX/v<KEY_VERSION>/<key>`: a key version change never reads old objects."""
        if not _KEY_PATTERN.fullmatch(key):
            raise ValueError("not a cache key (64 lower-case hex digits)")
        return self.entries + key

    def key_of(self, name: str) -> str | None:
        """The cache key an object name holds; None for anything else in the bucket."""
        key = name.removeprefix(self.entries)
        return key if key != name and _KEY_PATTERN.fullmatch(key) else None


def parse_location(text: str) -> RemoteLocation:
    """`s3://BUCKET/PREFIX` → RemoteLocation; ValueError with a reason that never echoes it.

    The value is not repeated in the error: someone may have put credentials in it.
    """
    scheme, sep, rest = text.strip().partition("://")
    if scheme.lower() != "s3" or not sep:
        raise ValueError(f"must be {URL_FORM}")
    if any(c in rest for c in "@?#"):
        raise ValueError(
            f"must be {URL_FORM} without credentials, query or fragment; "
            "credentials come from the standard AWS configuration"
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_PATTERN.fullmatch(bucket) or ".." in bucket:
        raise ValueError("the bucket must be 3-63 lower-case letters, digits, '.' or '-'")
    segments = [s for s in prefix.split("/") if s]
    if any(s in (".", "..") or not _PREFIX_SEGMENT.fullmatch(s) for s in segments):
        raise ValueError("the prefix may hold letters, digits and . _ = + - between '/'")
    return RemoteLocation(bucket, "/".join(segments))


def wrap(key: str, packed_entry: bytes) -> bytes:
    """The object stored for one entry: the packed entry with its key and digest."""
    return msgpack.packb(
        {
            "v": OBJECT_VERSION,
            "key": key,
            "sha256": hashlib.sha256(packed_entry).hexdigest(),
            "entry": packed_entry,
        },
        use_bin_type=True,
    )


def unwrap(data: bytes, key: str) -> bytes:
    """The packed entry of a remote object, once everything in it is checked.

    Raises CorruptObject with a one-line reason: undecodable, another version, another
    key, a digest that does not match, or an entry that records.unpack refuses.
    """
    try:
        raw = msgpack.unpackb(data)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise CorruptObject(f"undecodable object: {type(e).__name__}") from None
    if not isinstance(raw, dict):
        raise CorruptObject(f"not an object envelope: a msgpack {type(raw).__name__}")
    version = raw.get("v")
    if type(version) is not int or version != OBJECT_VERSION:
        raise CorruptObject(f"unknown object version {version!r}")
    packed, digest = raw.get("entry"), raw.get("sha256")
    if not isinstance(packed, bytes) or not isinstance(digest, str):
        raise CorruptObject("object without an entry or its digest")
    if raw.get("key") != key:
        raise CorruptObject("the object holds another key than the one asked for")
    if hashlib.sha256(packed).hexdigest() != digest:
        raise CorruptObject("the entry does not match its digest")
    try:
        entry = records.unpack(packed)
    except records.CorruptEntry as e:
        raise CorruptObject(f"bad entry: {e}") from None
    if entry.key != key:
        raise CorruptObject("the entry holds another key than the one asked for")
    return packed
