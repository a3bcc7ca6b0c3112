"""User rules for volatile content (SPEC §3): patterns, the rules on a body, what a miss says."""

from __future__ import annotations

import json

import pytest

from provider_cache.core import bodies, diagnose, userrules
from provider_cache.core.keys import KeyRules, normalize
from provider_cache.core.records import StoredRequest
from provider_cache.core.userrules import PRESETS, parse, parse_pattern

UUID_A = "1f0e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b"
UUID_B = "9ABCDEF0-1234-4abc-9def-0123456789ab"

# --- patterns --------------------------------------------------------------------------------


def matches(name: str, text: str) -> list[str]:
    return parse_pattern(name).regex.findall(text)


def test_uuid_finds_uuids_of_any_version_and_case_not_parts_of_longer_words() -> None:
    text = f"run {UUID_A} and ({UUID_B}), id-{UUID_A}; x{UUID_A} {UUID_A}0 {UUID_A[:-1]}"
    assert matches("uuid", text) == [UUID_A, UUID_B, UUID_A]


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-05-01T12:30:45Z",
        "2024-05-01T12:30:45.123456+02:00",
        "2024-05-01 12:30",
        "2024-05-01T12:30:45,5-0330",
        "2024-05-01T12:30:45+01",
    ],
)
def test_iso_timestamp_finds_a_date_with_a_time(stamp: str) -> None:
    assert matches("iso-timestamp", f"at {stamp}, then") == [stamp]


def test_iso_timestamp_leaves_a_date_alone_and_numbers_that_only_look_alike() -> None:
    assert matches("iso-timestamp", "on 2024-05-01, code 12024-05-01T12:30, 2024-05-01T1:30") == []


def test_hex_id_finds_long_hex_ids_with_letters_and_digits() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    text = f"trace {trace} sha 0123456789abcdef x{trace} card 1234567890123456 deadbeefdeadbeefab"
    assert matches("hex-id", text) == [trace, "0123456789abcdef"]
    assert matches("hex-id", UUID_A) == []  # its groups are too short: that is uuid's


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("run-(\\d+", "is not a regular expression (missing ), unterminated subpattern"),
        ("x*", "matches the empty string"),
        ("\\b", "matches the empty string"),
        ("(?=a)", "matches the empty string"),
        ("uuids", "is not a ready-made pattern (did you mean uuid?)"),
        ("ISO_TIMESTAMP", "(did you mean iso-timestamp?)"),
    ],
)
def test_a_bad_pattern_says_why_on_one_line(text: str, why: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse([], [text])
    message = str(raised.value)
    assert message.startswith(f"cache_normalize: {text!r} ") and why in message
    assert message.endswith("ready-made: uuid, iso-timestamp, hex-id") and "\n" not in message


def test_patterns_split_on_lines_not_commas() -> None:
    rules = parse([], ["uuid\nhex-id", r"\d{2,4}-x", "uuid"])
    assert [p.source for p in rules.normalize] == ["uuid", "hex-id", r"\d{2,4}-x"]
    assert [p.placeholder for p in rules.normalize] == ["<uuid>", "<hex-id>", "<normalized>"]


def test_placeholders_need_no_json_escape() -> None:
    """canonical_json writes strings between bare quotes when the text had no backslash."""
    for placeholder in [f"<{name}>" for name in PRESETS] + [userrules.CUSTOM_PLACEHOLDER]:
        assert json.dumps(placeholder) == f'"{placeholder}"'


def test_a_long_custom_pattern_is_shortened_where_it_is_named() -> None:
    (pattern,) = parse([], ["a" * 60]).normalize
    assert pattern.label == f"cache_normalize /{'a' * 39}…/"


# --- the decoder: rules on the one parse of the body -----------------------------------------


def decode(rules: userrules.UserRules, value: object) -> tuple[str | None, dict[str, int]]:
    decoder = rules.decoder(KeyRules().json_decoder)
    canonical = bodies.canonical_json(json.dumps(value).encode(), decoder)
    return (canonical.decode() if canonical else None), decoder.counts


def test_string_values_are_normalised_names_and_numbers_are_not() -> None:
    rules = parse([], ["uuid", r"\d{3}"])
    body = {UUID_A: f"a {UUID_A}", "n": 1234, "list": [UUID_B, {"k": "x 123"}]}
    text, counts = decode(rules, body)
    assert text == (
        f'{{"{UUID_A}":"a <uuid>","list":["<uuid>",{{"k":"x <normalized>"}}],"n":1234}}'
    )
    assert counts == {"cache_normalize uuid": 2, r"cache_normalize /\d{3}/": 1}


def test_secrets_are_redacted_before_the_rules_and_never_normalised() -> None:
    rules = parse([], ["(?:redacted)"])
    text, counts = decode(rules, {"api_key": "sk-1234", "q": "redacted"})
    assert text == '{"api_key":"<redacted>","q":"<normalized>"}'
    assert counts == {"cache_normalize /(?:redacted)/": 1}


def test_a_root_string_is_normalised() -> None:
    assert decode(parse([], ["uuid"]), UUID_A) == ('"<uuid>"', {"cache_normalize uuid": 1})


def test_paths_apply_before_patterns() -> None:
    rules = parse(["$.metadata.run_id"], ["uuid"])
    text, counts = decode(rules, {"metadata": {"run_id": UUID_A}, "q": UUID_B})
    assert text == '{"metadata":{},"q":"<uuid>"}'
    assert counts == {"cache_ignore_json $.metadata.run_id": 1, "cache_normalize uuid": 1}


def test_each_decode_counts_afresh() -> None:
    rules = parse([], ["uuid"])
    assert decode(rules, [UUID_A])[1] == {"cache_normalize uuid": 1}
    assert decode(rules, ["none"])[1] == {}


def test_applied_lists_rules_in_their_order_and_only_those_that_changed_something() -> None:
    rules = parse(["$.a", "$.b"], ["uuid"])
    counts = {"cache_normalize uuid": 2, "cache_ignore_json $.b": 1, "cache_ignore_json $.a": 0}
    assert list(rules.applied(counts).items()) == [
        ("cache_ignore_json $.b", 1),
        ("cache_normalize uuid", 2),
    ]


def test_no_rules_are_falsy_and_make_no_user_rules() -> None:
    assert not parse([], [])
    assert KeyRules.with_extra(user=parse([" ", ""], ["\n"])).user is None


# --- what a miss says ------------------------------------------------------------------------

URL = "https://api.openai.com/v1/chat/completions"


def stored(body: dict) -> StoredRequest:
    return StoredRequest(
        method="POST",
        url=URL,
        headers=[(b"content-type", b"application/json")],
        body=json.dumps(body).encode(),
    )


def test_describe_names_rules_and_counts_never_values() -> None:
    rules = KeyRules.with_extra(user=parse(["$.metadata.run_id"], ["uuid"]))
    body = {"metadata": {"run_id": "secret-run"}, "q": f"{UUID_A} {UUID_B}"}
    normalized = normalize(diagnose.stored_parts(stored(body)), rules)
    lines = userrules.describe(normalized)
    assert lines == [
        "cache_ignore_json $.metadata.run_id removed 1 value",
        "cache_normalize uuid replaced 2 values",
    ]
    assert not any(v in "".join(lines) for v in ("secret-run", UUID_A, UUID_B))
    assert userrules.describe(normalize(diagnose.stored_parts(stored({"q": "x"})), rules)) == []


def test_a_miss_under_a_new_rule_says_so_and_which_rule_applied() -> None:
    """Recorded before cache_normalize=uuid: the same request under today's rules, but
    keyed under other ones; the diagnosis says the rule changed this request."""
    rules = KeyRules.with_extra(user=parse([], ["uuid"]))
    recorded = [("old", stored({"q": f"hello {UUID_A}"}))]
    missed = normalize(diagnose.stored_parts(stored({"q": f"hello {UUID_B}"})), rules)
    result = diagnose.closest(missed, recorded, rules)
    assert result == {
        "key": "old",
        "differences": [
            diagnose.SAME_REQUEST_OTHER_RULES,
            "rule applied: cache_normalize uuid replaced 1 value",
        ],
        "more": 0,
    }


def test_a_miss_that_differs_elsewhere_names_the_difference_and_the_rule() -> None:
    rules = KeyRules.with_extra(user=parse(["$.metadata.run_id"], []))
    recorded = [("k", stored({"metadata": {"run_id": "1"}, "q": "a"}))]
    missed = normalize(
        diagnose.stored_parts(stored({"metadata": {"run_id": "2"}, "q": "b"})), rules
    )
    result = diagnose.closest(missed, recorded, rules)
    assert result is not None
    assert result["differences"] == [
        'body $.q: "a" → "b"',
        "rule applied: cache_ignore_json $.metadata.run_id removed 1 value",
    ]
