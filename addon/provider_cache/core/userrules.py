"""User rules for volatile request content (SPEC §3): cache_ignore_json and cache_normalize.

Tests put a UUID, a timestamp or a run marker into what they send, and such a request
never hits. `cache_ignore_json` leaves JSON body fields out of the key (a small JSONPath
subset: `$.metadata.run_id`, `$.messages[*].id`, `$..tool_call_id`); `cache_normalize`
replaces what regular expressions match (ready-made: uuid, iso-timestamp, hex-id) by a
placeholder in JSON string values, text bodies and query values, never in the method,
host, path or headers. Pure: the key (core/keys.py) applies the rules, and records which
ones changed a request, so that they are part of its key and named by a miss's diagnosis.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from provider_cache.core.jsonpath import JsonObject, JsonPath, parse_path, remove, split_paths
from provider_cache.core.keys import REDACTED, RULES_APPLIED

#: Not preceded by a letter or digit, checked once the first character has matched: a
#: pattern that opens with a character class lets `re` skip ahead fast (a third faster).
_HEX_START = r"[0-9A-Fa-f](?<![0-9A-Za-z][0-9A-Fa-f])"
#: The ready-made patterns of cache_normalize, by name; each is replaced by `<name>`.
PRESETS: dict[str, str] = {
    # Any version, either case, not inside a longer run of letters and digits.
    "uuid": _HEX_START + r"[0-9A-Fa-f]{7}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}(?![0-9A-Za-z])",
    # A date with a time (a date alone may be what is asked about), seconds, fraction and
    # offset optional: 2024-05-01T12:30:45.123Z, 2024-05-01 12:30+02:00.
    "iso-timestamp": r"\d(?<!\d\d)\d{3}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?(?![\d:])",
    # 16 or more hex digits, with a digit and a letter among them (a long decimal number is
    # no id): trace ids, digests, UUIDs without their dashes.
    "hex-id": _HEX_START + r"(?:(?<=[0-9])|(?=[0-9A-Fa-f]*[0-9]))"
    r"(?:(?<=[A-Fa-f])|(?=[0-9A-Fa-f]*[A-Fa-f]))[0-9A-Fa-f]{15,}(?![0-9A-Za-z])",
}
#: What a pattern of the user's own is replaced by. Placeholders hold no character that JSON
#: escapes: a canonical body whose text had no backslash is written without escaping.
CUSTOM_PLACEHOLDER = "<normalized>"
#: How much of a pattern of the user's own a diagnosis line shows.
SHOWN_PATTERN = 40

# --- patterns --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A cache_normalize rule: a ready-made name or a regular expression of the user's."""

    source: str
    regex: re.Pattern[str] = field(compare=False)
    placeholder: str = field(compare=False)

    @property
    def label(self) -> str:
        """How a diagnosis names it: `cache_normalize uuid`, `cache_normalize /run-\\d+/`."""
        if self.source in PRESETS:
            return f"cache_normalize {self.source}"
        shown = self.source if len(self.source) <= SHOWN_PATTERN else self.source[:39] + "…"
        return f"cache_normalize /{shown}/"


#: Strings a pattern must not match with nothing: it would put placeholders everywhere.
_PROBES = ("", "a", "a b", "0-1", "x\n")


def parse_pattern(text: str) -> Pattern:
    """A ready-made name, or a regular expression; ValueError saying why it is not one."""
    if text in PRESETS:
        return Pattern(text, re.compile(PRESETS[text]), f"<{text}>")
    near = difflib.get_close_matches(text.lower().replace("_", "-"), PRESETS, n=1, cutoff=0.7)
    if near and re.fullmatch(r"[\w-]+", text):  # a typo must not become a literal pattern
        raise ValueError(
            f"{text!r} is not a ready-made pattern (did you mean {near[0]}?); "
            f"for the text itself, write (?:{text})"
        )
    try:
        regex = re.compile(text)
    except re.error as e:
        raise ValueError(f"{text!r} is not a regular expression ({e})") from None
    if any((m := regex.search(probe)) is not None and m.end() == m.start() for probe in _PROBES):
        raise ValueError(f"{text!r} matches the empty string: it would match everywhere")
    return Pattern(text, regex, CUSTOM_PLACEHOLDER)


def split_patterns(values: Sequence[str]) -> list[str]:
    """Patterns given one per value, or several in one on separate lines (not commas: a
    regular expression has them, as in \\d{2,4})."""
    return [line.strip() for value in values for line in value.splitlines() if line.strip()]


# --- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRules:
    """The parsed options. Empty rules are no rules: KeyRules keeps None for them, so that a
    request costs what it did without this module."""

    ignore_json: tuple[JsonPath, ...] = ()
    normalize: tuple[Pattern, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ignore_json or self.normalize)

    @property
    def labels(self) -> tuple[str, ...]:
        """Each rule as the key material and a diagnosis name it, in the order applied."""
        paths = tuple(f"cache_ignore_json {path.text}" for path in self.ignore_json)
        return paths + tuple(pattern.label for pattern in self.normalize)

    def decoder(self, base: json.JSONDecoder) -> RuleDecoder:
        """A decoder for one body (it counts what its rules changed in that body)."""
        return RuleDecoder(base, self)

    def text(self, text: str, counts: dict[str, int]) -> str:
        """`text` with every pattern's matches replaced, one pattern after the other."""
        for pattern in self.normalize:
            text, n = pattern.regex.subn(pattern.placeholder, text)
            if n:
                counts[pattern.label] = counts.get(pattern.label, 0) + n
        return text

    def raw_body(self, body: bytes, counts: dict[str, int]) -> bytes:
        """A body that is not JSON, normalised as text (undecodable bytes kept as they are)."""
        if not self.normalize:
            return body
        text = body.decode("utf-8", "surrogateescape")
        changed = self.text(text, counts)
        return body if changed == text else changed.encode("utf-8", "surrogateescape")

    def query(self, pairs: list[tuple[str, str]], counts: dict[str, int]) -> list[tuple[str, str]]:
        """Query values normalised (names and redacted secrets are not), sorted again."""
        if not self.normalize:
            return pairs
        return sorted((k, v if v == REDACTED else self.text(v, counts)) for k, v in pairs)

    def applied(self, counts: dict[str, int]) -> dict[str, int]:
        """The rules that changed a request, in rule order, with how many values each."""
        return {label: counts[label] for label in self.labels if counts.get(label)}


class RuleDecoder(json.JSONDecoder):
    """`base` (bodies.json_decoder's, secrets redacted) whose parsed body then loses what
    cache_ignore_json names and has cache_normalize applied to its string values."""

    def __init__(self, base: json.JSONDecoder, rules: UserRules):
        super().__init__(
            object_pairs_hook=base.object_pairs_hook,
            parse_float=base.parse_float,
            parse_int=base.parse_int,
            parse_constant=base.parse_constant,
        )
        self.rules = rules
        self.counts: dict[str, int] = {}

    def decode(self, s: str, *args: object, **kwargs: object) -> object:
        root = super().decode(s)
        for path in self.rules.ignore_json:
            n = remove(root, path)
            if n:
                label = f"cache_ignore_json {path.text}"
                self.counts[label] = self.counts.get(label, 0) + n
        if self.rules.normalize:
            root = self._strings(root)
        return root

    def _strings(self, root: object) -> object:
        """Every string value normalised in place (names are not), without recursion."""
        if type(root) is str:
            return self._one(root)
        todo = [root]
        while todo:
            node = todo.pop()
            if isinstance(node, JsonObject):
                for i, (name, value) in enumerate(node):
                    if type(value) is str:
                        node[i] = (name, self._one(value))
                    elif isinstance(value, list):
                        todo.append(value)
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    if type(value) is str:
                        node[i] = self._one(value)
                    elif isinstance(value, list):
                        todo.append(value)
        return root

    def _one(self, value: str) -> str:
        return value if value == REDACTED else self.rules.text(value, self.counts)


def parse(ignore_json: Sequence[str], normalize: Sequence[str]) -> UserRules:
    """The two options' values as rules (duplicates once); ValueError naming the bad one."""
    paths: list[JsonPath] = []
    for text in split_paths(ignore_json):
        try:
            path = parse_path(text)
        except ValueError as e:
            raise ValueError(f"cache_ignore_json: {e}") from None
        if path not in paths:
            paths.append(path)
    patterns: list[Pattern] = []
    for text in split_patterns(normalize):
        try:
            pattern = parse_pattern(text)
        except ValueError as e:
            raise ValueError(f"cache_normalize: {e}; ready-made: {', '.join(PRESETS)}") from None
        if pattern not in patterns:
            patterns.append(pattern)
    return UserRules(tuple(paths), tuple(patterns))


def describe(normalized: dict) -> list[str]:
    """What the rules did to a normalised request: `cache_normalize uuid replaced 2 values`.
    Names and counts only, never a value that was replaced or removed."""
    lines = []
    for label, count in normalized.get(RULES_APPLIED, {}).items():
        verb = "removed" if label.startswith("cache_ignore_json") else "replaced"
        lines.append(f"{label} {verb} {count} value{'' if count == 1 else 's'}")
    return lines
