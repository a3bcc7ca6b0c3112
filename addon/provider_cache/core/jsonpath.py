"""JSON paths for cache_ignore_json (SPEC §3): a small JSONPath subset, parsed and applied.

`$.metadata.run_id`, `$.messages[*].id`, `$.messages[-1]`, `$.metadata.*`, `$['a.b']` and
`$..tool_call_id` (a name at any depth): enough to name the volatile fields of provider
requests, hand-written so that the key needs no JSONPath library. A path acts on the tree
that bodies' canonical JSON parse makes, in place. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from provider_cache.core import bodies

#: bodies' parsed JSON object: its (name, value) pairs, sorted by name.
JsonObject = bodies._Object

#: A path step: (kind, argument). "key" a member by name, "index" an array element, "all"
#: every member or element, "deep" a member by name at this level or any level below.
Step = tuple[str, str | int | None]

_NAME = re.compile(r"[^.\[\]'\",\s*]+")
_BRACKET = re.compile(r"\[(?:(\*)|(-?\d+)|'([^']*)'|\"([^\"]*)\")\]")


@dataclass(frozen=True)
class JsonPath:
    """A parsed path; `text` is its canonical spelling (`$['a']` and `$.a` are one path)."""

    text: str
    steps: tuple[Step, ...] = field(compare=False)


def parse_path(text: str) -> JsonPath:
    """`$.a.b`, `$.a[0]`, `$.a[*].b`, `$.*`, `$['a.b']`, `$..name`; ValueError saying why."""
    source = text.strip()
    if not source.startswith("$"):
        raise ValueError(f"JSON path {text!r} must start with $")
    steps: list[Step] = []
    at = 1
    while at < len(source):
        step, at = _step(source, at)
        steps.append(step)
    if not steps:
        raise ValueError(f"JSON path {text!r} names the whole body, not a field in it")
    return JsonPath(_spell(steps), tuple(steps))


def _step(source: str, at: int) -> tuple[Step, int]:
    if source.startswith("..", at):
        name, end = _member(source, at + 2)
        if name is None:
            raise ValueError(f"JSON path {source!r}: .. must be followed by a field name")
        return ("deep", name), end
    if source.startswith(".*", at):
        return ("all", None), at + 2
    if source.startswith(".", at):
        bare = _NAME.match(source, at + 1)
        if bare is None:
            raise ValueError(f"JSON path {source!r}: a field name is missing at {at + 1}")
        return ("key", bare.group()), bare.end()
    bracket = _BRACKET.match(source, at)
    if bracket is None:
        raise ValueError(
            f"JSON path {source!r}: unexpected {source[at]!r} at {at} "
            "(expected .name, ..name, [N], [*] or ['name'])"
        )
    star, index, *quoted = bracket.groups()
    if star:
        return ("all", None), bracket.end()
    if index is not None:
        return ("index", int(index)), bracket.end()
    return ("key", next(q for q in quoted if q is not None)), bracket.end()


def _member(source: str, at: int) -> tuple[str | None, int]:
    """A name after `..`: bare or in quoted brackets."""
    name = _NAME.match(source, at)
    if name is not None:
        return name.group(), name.end()
    bracket = _BRACKET.match(source, at)
    if bracket is not None and (bracket.group(3) is not None or bracket.group(4) is not None):
        return bracket.group(3) if bracket.group(3) is not None else bracket.group(4), bracket.end()
    return None, at


def _spell(steps: Iterable[Step]) -> str:
    out = ["$"]
    for kind, arg in steps:
        bare = isinstance(arg, str) and _NAME.fullmatch(arg) is not None
        named = f".{arg}" if bare else f"[{json.dumps(arg)}]"
        if kind == "key":
            out.append(named)
        elif kind == "deep":
            out.append("." + named if bare else f"..{named}")
        elif kind == "index":
            out.append(f"[{arg}]")
        else:
            out.append("[*]")
    return "".join(out)


def split_paths(values: Sequence[str]) -> list[str]:
    """Paths given one per value, or several in one separated by commas or new lines (a
    comma inside a quoted ['name'] belongs to the name)."""
    found: list[str] = []
    for value in values:
        current: list[str] = []
        quote = ""
        for char in value:
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char in ",\n":
                found.append("".join(current))
                current = []
                continue
            current.append(char)
        found.append("".join(current))
    return [path.strip() for path in found if path.strip()]


def _children(node: object) -> list:
    if isinstance(node, JsonObject):
        return [value for _, value in node]
    return node if type(node) is list else []


def remove(root: object, path: JsonPath) -> int:
    """Take what `path` names out of a parsed body (bodies' tree: objects are JsonObject
    lists of pairs) in place; how many members or elements went. No recursion: a body may
    nest as deep as bodies.MAX_JSON_DEPTH."""
    removed = 0
    last = len(path.steps) - 1
    todo: list[tuple[object, int]] = [(root, 0)]
    while todo:
        node, i = todo.pop()
        kind, arg = path.steps[i]
        if i == last:
            removed += _remove_here(node, "key" if kind == "deep" else kind, arg)
        else:
            todo += [(child, i + 1) for child in _select(node, kind, arg)]
        if kind == "deep":  # the name may also be further down (of what is left)
            todo += [(child, i) for child in _children(node)]
    return removed


def _select(node: object, kind: str, arg: str | int | None) -> list:
    if kind == "all":
        return _children(node)
    if kind in ("key", "deep"):
        if isinstance(node, JsonObject):
            return [value for name, value in node if name == arg]
        return []
    if type(node) is list and isinstance(arg, int) and -len(node) <= arg < len(node):
        return [node[arg]]
    return []


def _remove_here(node: object, kind: str, arg: str | int | None) -> int:
    if not isinstance(node, list):  # a string, number or literal has no members
        return 0
    before = len(node)
    if kind == "all":
        node.clear()
    elif kind == "key":
        if isinstance(node, JsonObject):
            node[:] = [pair for pair in node if pair[0] != arg]
    elif type(node) is list and isinstance(arg, int) and -len(node) <= arg < len(node):
        del node[arg]
    return before - len(node)
