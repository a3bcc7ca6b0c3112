"""cache_rebuild.py's memory: exponential backoff with full jitter, persisted in the cache dir.

Pure apart from reading and writing the one JSON file. The state survives between
CI invocations, so jobs that start inside a backoff window do not rebuild again.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provider_cache.storage.atomic import write_atomically

SCHEMA = 1
HISTORY = 20


@dataclass(frozen=True)
class Policy:
    base: float = 30.0
    factor: float = 2.0
    cap: float = 900.0
    max_attempts: int = 3

    def delay(self, failures: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Full jitter (AWS's "Exponential Backoff and Jitter"): uniform in [0, min(cap, b·fⁿ)].

        A provider's retry-after is a floor: we never come back before it allows.
        """
        try:
            ceiling = min(self.cap, self.base * self.factor ** max(0, failures - 1))
        except OverflowError:  # failures persist between CI runs: after ~1000 the power overflows
            ceiling = self.cap
        return max(rng.uniform(0, ceiling), retry_after or 0.0)


@dataclass
class State:
    schema: int = SCHEMA
    failures: int = 0  # consecutive failed attempts
    next_allowed_at: float | None = None
    last_verified_at: float | None = None
    last_hit_rate: float | None = None
    command: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    def note(self, record: dict) -> None:
        self.history = [*self.history, record][-HISTORY:]


def load(path: Path) -> tuple[State, str | None]:
    """The saved state, or a fresh one plus a warning when the file is unreadable.

    A field of the wrong type makes the file unreadable too: it would otherwise fail
    later, in the middle of a rebuild (a count compared with a string, …).
    """
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON {type(raw).__name__}, not an object")
        if raw.get("schema") != SCHEMA:
            raise ValueError(f"schema {raw.get('schema')!r}")
        state = State(**raw)
        _check_types(state)
        return state, None
    except FileNotFoundError:
        return State(), None
    except (OSError, ValueError, TypeError, AttributeError, RecursionError) as e:
        return State(), f"ignoring unreadable backoff state {path} ({e}); starting afresh"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_types(state: State) -> None:
    if (
        not isinstance(state.failures, int)
        or isinstance(state.failures, bool)
        or state.failures < 0
    ):
        raise ValueError("field 'failures' is not a count")
    for name in ("next_allowed_at", "last_verified_at", "last_hit_rate"):
        value = getattr(state, name)
        if value is not None and not _is_number(value):
            raise ValueError(f"field {name!r} is not a number or null")
    if not isinstance(state.command, list) or not all(isinstance(a, str) for a in state.command):
        raise ValueError("field 'command' is not a list of strings")
    if not isinstance(state.history, list):
        raise ValueError("field 'history' is not a list")
    for i, record in enumerate(state.history):
        if not (
            isinstance(record, dict)
            and _is_number(record.get("at"))
            and isinstance(record.get("kind"), str)
        ):
            raise ValueError(f"field 'history[{i}]' is not a record with 'at' and 'kind'")


def save(path: Path, state: State) -> None:
    write_atomically(path, asdict(state))
