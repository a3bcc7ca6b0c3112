"""Matching a name against many glob patterns at once: header names, host names.

Pure. Names without glob characters are a set lookup, the globs one compiled regex
built by fnmatch itself, so the answers are fnmatchcase's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from fnmatch import translate

KNOWN_NAMES = 1024


class NameMatcher:
    """`any(fnmatchcase(name, p) for p in patterns)`, without a regex match per pattern.

    Names without glob characters are a set lookup and the globs are one compiled regex
    (fnmatch's own translation, so the answers are the same). The per-pattern loop was half
    the cost of a cache key: every request header against some thirty patterns, twice
    (measured with scripts/bench.py: see the README, Performance).
    """

    def __init__(self, patterns: tuple[str, ...]):
        self.exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
        self.globs = tuple(p for p in patterns if p not in self.exact)
        self.glob: Callable[[str], object] | None = (
            re.compile("|".join(translate(p) for p in self.globs)).match if self.globs else None
        )
        # Answers are remembered: a request carries the same dozen header names every time
        # (bounded, as the names come off the wire).
        self.matches: Callable[[str], bool] = functools.lru_cache(maxsize=KNOWN_NAMES)(
            self._matches
        )

    def __call__(self, name: str) -> bool:
        return self.matches(name)

    def _matches(self, name: str) -> bool:
        return name in self.exact or (self.glob is not None and self.glob(name) is not None)
