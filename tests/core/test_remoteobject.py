"""Remote objects (SPEC §11): where an entry lives in a bucket, and the envelope a reader checks
before it trusts an object another machine wrote."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider_cache.core import records
from provider_cache.core.keys import KEY_VERSION
from provider_cache.core.remoteobject import (
    OBJECT_VERSION,
    CorruptObject,
    RemoteLocation,
    parse_location,
    unwrap,
    wrap,
)

KEY = "ab" * 32
OTHER_KEY = "cd" * 32


def packed_entry(key: str = KEY) -> bytes:
    return records.pack(
        records.Entry(
            key=key,
            recorded_at=1_732_579_200.5,
            request=records.StoredRequest("POST", "https://api.openai.com/v1/x", [], b"{}"),
            response=records.StoredResponse(200, "OK", [(b"content-type", b"text/plain")], b"hi"),
        )
    )


def envelope(**fields: object) -> bytes:
    """An envelope as wrap makes it, with some fields replaced."""
    entry = packed_entry()
    raw = {"v": OBJECT_VERSION, "key": KEY, "sha256": hashlib.sha256(entry).hexdigest()}
    return msgpack.packb(raw | {"entry": entry} | fields)


# --- locations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("s3://team-cache/provider-cache", "team-cache", "provider-cache"),
        ("s3://team-cache", "team-cache", ""),
        ("s3://team-cache/", "team-cache", ""),
        ("S3://team.cache.v2/a/b/c/", "team.cache.v2", "a/b/c"),
        ("s3://abc//a//b", "abc", "a/b"),
        ("  s3://abc/ci_main=1+x  ", "abc", "ci_main=1+x"),
    ],
)
def test_a_location_is_a_bucket_and_a_clean_prefix(text: str, bucket: str, prefix: str) -> None:
    assert parse_location(text) == RemoteLocation(bucket, prefix)


@pytest.mark.parametrize(
    "text",
    [
        "team-cache/prefix",
        "gs://team-cache/prefix",
        "https://team-cache.s3.amazonaws.com/prefix",
        "s3://",
        "s3://ab",
        "s3://Team-Cache/x",
        "s3://-team/x",
        "s3://team..cache/x",
        "s3://" + "a" * 64,
        "s3://team/../escape",
        "s3://team/a/./b",
        "s3://team/spaces in/prefix",
        "s3://team/x?versionId=1",
        "s3://team/x#frag",
    ],
)
def test_a_bad_location_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_location(text)


@pytest.mark.parametrize(
    "text",
    ["s3://AKIAPLANTED:sekritPLANTED@team/x", "s3://team/x?X-Amz-Signature=sekritPLANTED"],
)
def test_a_location_with_credentials_is_refused_without_repeating_them(text: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_location(text)
    assert "PLANTED" not in str(refused.value)
    assert "AWS configuration" in str(refused.value)


def test_a_location_prints_as_it_is_written() -> None:
    assert str(parse_location("s3://team-cache/a/b/")) == "s3://team-cache/a/b"
    assert str(parse_location("s3://team-cache")) == "s3://team-cache"


@pytest.mark.parametrize(
    ("prefix", "name"),
    [("team/cache", f"team/cache/v{KEY_VERSION}/{KEY}"), ("", f"v{KEY_VERSION}/{KEY}")],
)
def test_an_object_is_named_by_prefix_key_version_and_key(prefix: str, name: str) -> None:
    location = RemoteLocation("bucket", prefix)
    assert location.object_name(KEY) == name
    assert location.key_of(name) == KEY


def test_only_a_cache_key_names_an_object() -> None:
    location = RemoteLocation("bucket", "p")
    for bad in ["", "AB" * 32, "ab" * 31, KEY + "0", "../" + KEY[3:], f"x/{KEY[2:]}"]:
        with pytest.raises(ValueError):
            location.object_name(bad)


@pytest.mark.parametrize(
    "name",
    [
        f"p/probe/{KEY}",
        f"p/v{KEY_VERSION + 1}/{KEY}",
        f"p/v{KEY_VERSION}/{KEY}.tmp",
        f"p/v{KEY_VERSION}/sub/{KEY}",
        f"other/v{KEY_VERSION}/{KEY}",
        f"pp/v{KEY_VERSION}/{KEY}",
        "p/v1/",
    ],
)
def test_other_objects_in_the_bucket_hold_no_key(name: str) -> None:
    assert RemoteLocation("bucket", "p").key_of(name) is None


def test_folders_beside_the_entries() -> None:
    assert RemoteLocation("b", "p").folder("probe") == "p/probe/"
    assert RemoteLocation("b", "").folder("probe") == "probe/"
    assert RemoteLocation("b", "p").entries == f"p/v{KEY_VERSION}/"


# --- the envelope -----------------------------------------------------------------------------


def test_an_unwrapped_object_is_the_entry_that_was_wrapped() -> None:
    entry = packed_entry()
    assert unwrap(wrap(KEY, entry), KEY) == entry
    assert records.unpack(unwrap(wrap(KEY, entry), KEY)).key == KEY


def test_wrapping_is_deterministic() -> None:
    assert wrap(KEY, packed_entry()) == wrap(KEY, packed_entry())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "undecodable"),
        (b"\xc1", "undecodable"),
        (b"not msgpack at all", "undecodable"),
        (msgpack.packb([1, 2]), "not an object envelope"),
        (msgpack.packb("an entry"), "not an object envelope"),
        (envelope(v=2), "unknown object version"),
        (envelope(v="1"), "unknown object version"),
        (envelope(v=True), "unknown object version"),
        (envelope(entry="text"), "without an entry"),
        (envelope(sha256=None), "without an entry or its digest"),
        (envelope(key=OTHER_KEY), "another key"),
        (envelope(key=None), "another key"),
        (envelope(sha256="0" * 64), "digest"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_corrupt_object_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptObject) as refused:
        unwrap(data, KEY)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_object_asked_for_under_another_key_is_refused() -> None:
    with pytest.raises(CorruptObject, match="another key"):
        unwrap(wrap(KEY, packed_entry()), OTHER_KEY)


def test_an_envelope_around_an_entry_of_another_key_is_refused() -> None:
    """A writer that relabelled an entry (and recomputed the digest) is still caught."""
    with pytest.raises(CorruptObject, match="entry holds another key"):
        unwrap(wrap(KEY, packed_entry(OTHER_KEY)), KEY)


def test_a_sound_envelope_around_garbage_is_refused() -> None:
    with pytest.raises(CorruptObject, match="bad entry"):
        unwrap(wrap(KEY, b"\x93garbage"), KEY)


def test_a_changed_entry_byte_breaks_the_digest() -> None:
    data = bytearray(wrap(KEY, packed_entry()))
    data[data.rindex(b"hi")] ^= 0x01  # inside the entry's response body
    with pytest.raises(CorruptObject, match="digest"):
        unwrap(bytes(data), KEY)


def test_every_truncation_of_an_object_is_refused() -> None:
    data = wrap(KEY, packed_entry())
    for length in range(len(data)):
        with pytest.raises(CorruptObject):
            unwrap(data[:length], KEY)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(CorruptObject, match="undecodable"):
        unwrap(wrap(KEY, packed_entry()) + b"\x00", KEY)


@given(st.binary(max_size=256))
def test_arbitrary_bytes_are_a_corrupt_object_never_another_error(data: bytes) -> None:
    with pytest.raises(CorruptObject):
        unwrap(data, KEY)
