"""JSON paths of cache_ignore_json: the subset parsed, and what a path takes out of a body."""

from __future__ import annotations

import json

import pytest

from provider_cache.core import bodies
from provider_cache.core.jsonpath import parse_path, remove, split_paths
from provider_cache.core.userrules import parse


@pytest.mark.parametrize(
    ("text", "canonical", "steps"),
    [
        ("$.metadata.run_id", "$.metadata.run_id", (("key", "metadata"), ("key", "run_id"))),
        (
            "$.messages[*].id",
            "$.messages[*].id",
            (("key", "messages"), ("all", None), ("key", "id")),
        ),
        ("$..tool_call_id", "$..tool_call_id", (("deep", "tool_call_id"),)),
        ("  $.a[0]  ", "$.a[0]", (("key", "a"), ("index", 0))),
        ("$.a[-1]", "$.a[-1]", (("key", "a"), ("index", -1))),
        ("$.*", "$[*]", (("all", None),)),
        ("$['metadata'].run_id", "$.metadata.run_id", (("key", "metadata"), ("key", "run_id"))),
        ('$["a.b"]', '$["a.b"]', (("key", "a.b"),)),
        ("$..['x y'].z", '$..["x y"].z', (("deep", "x y"), ("key", "z"))),
    ],
)
def test_paths_parse_to_steps_and_one_spelling(text: str, canonical: str, steps: tuple) -> None:
    path = parse_path(text)
    assert (path.text, path.steps) == (canonical, steps)
    assert parse_path(canonical) == path


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("metadata.run_id", "must start with $"),
        ("$", "names the whole body"),
        ("$.", "a field name is missing at 2"),
        ("$.a[", "unexpected '[' at 3"),
        ("$.a[x]", "unexpected '[' at 3"),
        ("$.a*", "unexpected '*' at 3"),
        ("$..*", ".. must be followed by a field name"),
        ("$..[0]", ".. must be followed by a field name"),
        ("$ .a", "unexpected ' ' at 1"),
    ],
)
def test_a_bad_path_says_why_on_one_line(text: str, why: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse([text], [])
    message = str(raised.value)
    assert message.startswith(f"cache_ignore_json: JSON path {text.strip()!r}") and why in message
    assert "\n" not in message


def test_paths_split_on_commas_and_lines_but_not_inside_quotes() -> None:
    assert split_paths(["$.a, $.b\n$.c", "", "$['x,y']", " , "]) == [
        "$.a",
        "$.b",
        "$.c",
        "$['x,y']",
    ]
    rules = parse(["$.a,$.a", "$['a']"], [])
    assert [p.text for p in rules.ignore_json] == ["$.a"]  # one path, however it is spelled


def tree(value: object) -> object:
    """A body parsed as the key parses it (objects are sorted lists of pairs)."""
    return bodies._DECODER.decode(json.dumps(value))


def pruned(value: object, *paths: str) -> tuple[object, list[int]]:
    root = tree(value)
    counts = [remove(root, parse_path(p)) for p in paths]
    return json.loads(bodies._dump(root) or "null"), counts


CHAT = {
    "model": "m",
    "metadata": {"run_id": "r-1", "suite": "smoke"},
    "messages": [
        {"id": "m1", "role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
        {"id": "m3", "role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
}


@pytest.mark.parametrize(
    ("path", "count", "expected"),
    [
        ("$.metadata.run_id", 1, {**CHAT, "metadata": {"suite": "smoke"}}),
        ("$.metadata", 1, {k: v for k, v in CHAT.items() if k != "metadata"}),
        ("$.metadata.absent", 0, CHAT),
        ("$.model.deeper", 0, CHAT),  # a string has no members
        ("$.messages[0].absent", 0, CHAT),
        ("$.messages[9]", 0, CHAT),
        ("$.messages[-1]", 1, {**CHAT, "messages": CHAT["messages"][:2]}),
        ("$.messages[*]", 3, {**CHAT, "messages": []}),
        ("$.metadata.*", 2, {**CHAT, "metadata": {}}),
    ],
)
def test_a_path_removes_what_it_names_and_counts_it(path: str, count: int, expected: dict) -> None:
    assert pruned(CHAT, path) == (expected, [count])


def test_a_wildcard_path_takes_the_field_from_every_element() -> None:
    body, (count,) = pruned(CHAT, "$.messages[*].id")
    assert count == 2
    assert [m.get("id") for m in body["messages"]] == [None, None, None]
    assert body["messages"][1]["tool_calls"][0]["id"] == "c1"  # not the tool call's own id


def test_a_recursive_path_finds_the_name_at_any_depth() -> None:
    body, (count,) = pruned(CHAT, "$..id")
    assert count == 3
    assert '"id"' not in json.dumps(body) and '"tool_call_id"' in json.dumps(body)
    deep = {"a": [{"b": {"x": 1, "c": [{"x": 2}]}}], "x": 3}
    assert pruned(deep, "$..x") == ({"a": [{"b": {"c": [{}]}}]}, [3])


def test_a_recursive_path_counts_a_nested_match_once_with_its_parent() -> None:
    assert pruned({"x": {"x": {"x": 1}}, "y": 2}, "$..x") == ({"y": 2}, [1])


def test_a_recursive_path_then_a_step() -> None:
    body = {"tool": {"args": {"seed": 7, "q": "a"}}, "list": [{"args": {"seed": 8}}]}
    assert pruned(body, "$..args.seed") == (
        {"tool": {"args": {"q": "a"}}, "list": [{"args": {}}]},
        [2],
    )


def test_duplicate_names_are_all_removed() -> None:
    root = bodies._DECODER.decode('{"a": 1, "a": 2, "b": 3}')
    assert remove(root, parse_path("$.a")) == 2
    assert bodies._dump(root) == '{"b":3}'


def test_a_deep_body_is_walked_without_recursion() -> None:
    depth = bodies.MAX_JSON_DEPTH - 2
    text = '{"x":' * depth + '{"id":1}' + "}" * depth
    root = bodies._DECODER.decode(text)
    assert remove(root, parse_path("$..id")) == 1
