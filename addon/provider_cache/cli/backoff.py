"""cache_rebuild.py's memory: exponential backoff with full jitter, persisted in the cache dir.

Pure apart from reading and writing the one JSON file. The state survives between
CI invocations, so jobs that start inside a backoff window do not rebuild again.
"""

from __future__ import annotations

import json
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
    """The saved state, or a fresh one plus a warning when the file is unreadable."""
    try:
        raw = json.loads(path.read_text())
        if raw.get("schema") != SCHEMA:
            raise ValueError(f"schema {raw.get('schema')!r}")
        return State(**raw), None
    except FileNotFoundError:
        return State(), None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        return State(), f"ignoring unreadable backoff state {path} ({e}); starting afresh"


def save(path: Path, state: State) -> None:
    write_atomically(path, asdict(state))
