"""Per-run counters (SPEC §5): totals, a sliding window, per host, and the missed requests.

Pure and cheap: a hit is two integer increments and a deque append.
`snapshot()` builds the JSON document the stats file and the endpoint serve.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from provider_cache.core.rejections import REASONS

SCHEMA = 1
MISSED_LIMIT = 100
DEFAULT_WINDOW = 100
#: Hosts counted one by one; the counts of any further host go to OTHER_HOSTS.
MAX_HOSTS = 100
OTHER_HOSTS = "(other hosts)"
#: The run totals and the per-host counts, as the stats file, the endpoint and the gate name them.
TOTALS = ("hits", "misses", "recorded", "passthrough", "errors")
HOST_TOTALS = ("hits", "misses", "recorded", "errors")
TEST_TOTALS = ("hits", "misses", "recorded")
BODY_PREVIEW = 2048
#: Hits by tier (SPEC §11): the local store, or the remote tier on a local miss.
TIERS = ("local", "remote")
#: The remote tier's counts, as the stats file, the endpoint and the gate name them.
REMOTE_TOTALS = ("misses", "errors", "skipped", "uploaded", "pending", "failed", "conflicts")
#: The remote tier's lists of keys (uploads that failed, objects that differ from ours).
REMOTE_KEY_LISTS = ("failed_keys", "conflict_keys")
#: Keys each of those lists names at most.
REMOTE_KEYS_LIMIT = 100
#: Tests counted one by one (SPEC §12); any further test's counts go to OTHER_TESTS.
MAX_TESTS = 10_000
OTHER_TESTS = "(other tests)"
#: Tests a missed request names at most.
TESTS_LIMIT = 10


@dataclass
class HostCounts:
    hits: int = 0
    misses: int = 0
    recorded: int = 0
    errors: int = 0
    #: Answers of this host not stored, by reason: only the reasons that happened.
    rejected: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict:
        return {
            **{name: getattr(self, name) for name in HOST_TOTALS},
            "rejected": {r: self.rejected[r] for r in REASONS if r in self.rejected},
            "hit_rate": rate(self.hits, self.misses),
        }


@dataclass
class TestCounts:
    """One test's lookups (SPEC §12), when the pytest plugin names the tests."""

    __test__ = False  # not a test class, despite its name

    hits: int = 0
    misses: int = 0
    recorded: int = 0

    def snapshot(self) -> dict:
        return {**vars(self), "hit_rate": rate(self.hits, self.misses)}


@dataclass
class Missed:
    method: str
    url: str
    key: str
    count: int
    request: dict
    #: The closest recorded request and what differs, filled in by a background thread.
    closest: dict | None = None
    #: The tests that sent it (SPEC §12), when the tests are known; at most TESTS_LIMIT.
    tests: list[str] = field(default_factory=list)


@dataclass
class RemoteCounts:
    """The remote tier's counts (SPEC §11), apart from its hits (Stats.remote_hits).

    Lookups are counted on the event loop; uploads on the upload threads, which hold the
    uploader's lock while they count. Kept for the tier's life, across a new Stats.
    """

    location: str
    #: Keys asked for that the remote does not have.
    misses: int = 0
    #: Failed lookups (timeouts, error answers, corrupt objects) and a failed start-up probe.
    errors: int = 0
    #: Local misses not asked for: the remote was unavailable or paused after failures.
    skipped: int = 0
    #: Entries recorded here that the remote now holds (written, or already there the same).
    uploaded: int = 0
    #: Entries waiting for their upload, or under way.
    pending: int = 0
    #: Uploads given up (after retries, at shutdown, or with the queue full): still local.
    failed: int = 0
    #: Uploads whose key the remote already held with another answer: never replaced.
    conflicts: int = 0
    failed_keys: list[str] = field(default_factory=list)
    conflict_keys: list[str] = field(default_factory=list)

    def list_key(self, name: str, key: str) -> None:
        keys = getattr(self, name)
        if key not in keys and len(keys) < REMOTE_KEYS_LIMIT:
            keys.append(key)

    def snapshot(self) -> dict:
        return {
            "location": self.location,
            **{name: getattr(self, name) for name in REMOTE_TOTALS},
            **{name: list(getattr(self, name)) for name in REMOTE_KEY_LISTS},
        }


@dataclass
class Stats:
    mode: str
    window_size: int
    started_at: float = field(default_factory=time.time)
    hits: int = 0
    misses: int = 0
    recorded: int = 0
    passthrough: int = 0
    errors: int = 0
    #: Upstream answers 429 (or 503) while recording, and the longest retry-after they asked for.
    rate_limited: int = 0
    retry_after: float | None = None
    #: With a remote tier: its counts, and how many of the hits it served.
    remote: RemoteCounts | None = None
    remote_hits: int = 0

    def __post_init__(self) -> None:
        self.window: deque[bool] = deque(maxlen=self.window_size)
        self.by_host: dict[str, HostCounts] = {}
        self.missed: dict[str, Missed] = {}
        self.missed_dropped = 0
        #: Answers not stored (SPEC §4), by reason: every reason, 0 when it never happened.
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)
        #: The test running now, as the pytest plugin said (SPEC §12); None: none known.
        self.test: str | None = None
        #: None until a test runner names a test: then the counts of each test.
        self.by_test: dict[str, TestCounts] | None = None
        #: The oldest entry a hit served: (recorded_at, key), for the gate's --max-age.
        self.oldest: tuple[float, str] | None = None

    def run_test(self, name: str | None) -> None:
        """The test now running (None between tests): what follows is counted for it."""
        self.test = name
        if name is not None and self.by_test is None:
            self.by_test = {}

    def _test(self) -> TestCounts:
        assert self.by_test is not None and self.test is not None
        counts = self.by_test.get(self.test)
        if counts is None:
            name = self.test if len(self.by_test) < MAX_TESTS else OTHER_TESTS
            counts = self.by_test.setdefault(name, TestCounts())
        return counts

    def test_counts(self) -> dict:
        """The running test's counts so far (the pytest plugin's fixture)."""
        counts = self.by_test.get(self.test) if self.test and self.by_test else None
        return (counts or TestCounts()).snapshot()

    def _host(self, host: str) -> HostCounts:
        counts = self.by_host.get(host)
        if counts is None:
            if len(self.by_host) >= MAX_HOSTS:  # a glob such as *.openai.azure.com is open-ended
                host = OTHER_HOSTS
                counts = self.by_host.get(host)
            if counts is None:
                counts = self.by_host[host] = HostCounts()
        return counts

    def hit(self, host: str, recorded_at: float | None = None, key: str = "") -> None:
        """A hit, of an entry recorded at `recorded_at` (the oldest one used is kept)."""
        self.hits += 1
        self._host(host).hits += 1
        self.window.append(True)
        if self.test is not None:
            self._test().hits += 1
        if recorded_at is not None and (self.oldest is None or recorded_at < self.oldest[0]):
            self.oldest = (recorded_at, key)

    def miss(self, host: str, method: str, url: str, key: str, normalized: dict) -> bool:
        """Count a miss; True when it is a newly listed request (worth diagnosing)."""
        self.misses += 1
        self._host(host).misses += 1
        self.window.append(False)
        if self.test is not None:
            self._test().misses += 1
        seen = self.missed.get(key)
        if seen is not None:
            seen.count += 1
            self._name_test(seen)
        elif len(self.missed) < MISSED_LIMIT:
            self.missed[key] = Missed(method, url, key, 1, describe(normalized))
            self._name_test(self.missed[key])
            return True
        else:
            self.missed_dropped += 1
        return False

    def _name_test(self, missed: Missed) -> None:
        test = self.test
        if test is not None and test not in missed.tests and len(missed.tests) < TESTS_LIMIT:
            missed.tests.append(test)

    def from_remote(self) -> None:
        """The hit just counted was served by the remote tier (a local miss)."""
        self.remote_hits += 1

    def failed_lookup(self, host: str) -> None:
        """A lookup the cache could not complete: a miss (the gate must see it) and an error."""
        self.misses += 1
        self._host(host).misses += 1
        self.window.append(False)
        if self.test is not None:
            self._test().misses += 1
        self.error(host)

    def record(self, host: str) -> None:
        self.recorded += 1
        self._host(host).recorded += 1
        if self.test is not None:
            self._test().recorded += 1

    def reject(self, host: str, reason: str) -> None:
        """An answer to a cached request that was not stored, and why (core/rejections.py).

        An unknown reason is a caller's bug: it raises rather than growing a new count.
        """
        if reason not in self.rejected:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.rejected[reason] += 1
        counts = self._host(host).rejected
        counts[reason] = counts.get(reason, 0) + 1

    def error(self, host: str | None = None) -> None:
        self.errors += 1
        if host:
            self._host(host).errors += 1

    def rate_limit(self, retry_after: float | None) -> None:
        self.rate_limited += 1
        if retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, retry_after)

    def pass_through(self) -> None:
        self.passthrough += 1

    def counters(self) -> tuple[int, ...]:
        """Changes whenever anything was counted; cheap enough to poll every second."""
        counts = (
            self.hits,
            self.misses,
            self.recorded,
            self.passthrough,
            self.errors,
            self.rate_limited,
            *self.rejected.values(),
        )
        if self.remote is None:
            return counts
        return counts + tuple(getattr(self.remote, name) for name in REMOTE_TOTALS)

    def snapshot(self) -> dict:
        window_hits = sum(self.window)
        return {
            "schema": SCHEMA,
            "mode": self.mode,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "hits": self.hits,
            "misses": self.misses,
            "recorded": self.recorded,
            "passthrough": self.passthrough,
            "errors": self.errors,
            "rate_limited": self.rate_limited,
            "retry_after": self.retry_after,
            "hit_rate": rate(self.hits, self.misses),
            "window": {
                "size": self.window_size,
                "hits": window_hits,
                "misses": len(self.window) - window_hits,
                "hit_rate": rate(window_hits, len(self.window) - window_hits),
            },
            "rejected": dict(self.rejected),
            "by_host": {host: c.snapshot() for host, c in sorted(self.by_host.items())},
            "missed": [vars(m).copy() for m in list(self.missed.values())],
            "missed_dropped": self.missed_dropped,
            **self._tiers(),
            **self._tests(),
            **self._oldest(),
        }

    def _oldest(self) -> dict:
        if self.oldest is None:
            return {}
        return {"oldest_used": {"recorded_at": self.oldest[0], "key": self.oldest[1]}}

    def _tests(self) -> dict:
        """`by_test`, present only once a test runner named a test (SPEC §12)."""
        if self.by_test is None:
            return {}
        return {"by_test": {name: c.snapshot() for name, c in sorted(self.by_test.items())}}

    def _tiers(self) -> dict:
        """`tiers` and `remote`, present only when a remote tier is configured."""
        if self.remote is None:
            return {}
        local = self.hits - self.remote_hits
        return {
            "tiers": {"local": local, "remote": self.remote_hits},
            "remote": self.remote.snapshot(),
        }


def rate(hits: int, misses: int) -> float | None:
    total = hits + misses
    return None if total == 0 else hits / total


def describe(normalized: dict) -> dict:
    """Enough of the normalised request to see why it missed, as JSON-able text."""
    body = normalized["body"]
    text = body[:BODY_PREVIEW].decode("utf-8", "backslashreplace")
    described = {
        "headers": [f"{k}: {v}" for k, v in normalized["headers"]],
        "query": [f"{k}={v}" for k, v in normalized["query"]],
        "body_kind": normalized["body_kind"],
        "body": text + ("…" if len(body) > BODY_PREVIEW else ""),
    }
    # Imported here: the gate (cli/gate.py) reads this module and needs only the stdlib.
    from provider_cache.core import userrules

    rules = userrules.describe(normalized)
    return described | {"rules": rules} if rules else described


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²": str.isdigit takes what float() refuses
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None
