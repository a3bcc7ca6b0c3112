"""The key of a live request, remembered for when the same request comes again.

A key is remembered under `flows.fingerprint` of the request, which holds everything the
key is computed from, so computing it again could only give the same key (see
core/recent.py). The memo belongs to one set of key rules: new rules, a new `Keyer`.
"""

from __future__ import annotations

from dataclasses import replace

from mitmproxy import http

from provider_cache.core import keys
from provider_cache.core.recent import KEY_SLOTS, LRU
from provider_cache.mitm import flows

#: What stands for a body over cache_max_body_size in its key: such requests are never stored.
OVERSIZED_BODY = b"<over cache_max_body_size>"


class Keyer:
    def __init__(self, rules: keys.KeyRules):
        self.rules = rules
        self.recent: LRU[str] = LRU(KEY_SLOTS)

    def key(self, request: http.Request, storable: bool) -> tuple[str, dict | None]:
        """The request's key, and its normalised form if it had to be computed."""
        if not storable:
            return keys.key_for(parts(request, storable), self.rules)
        fingerprint = flows.fingerprint(request, self.rules)
        key = self.recent.get(fingerprint)
        if key is not None:
            return key, None
        key, normalized = keys.key_for(parts(request, storable), self.rules)
        self.recent.put(fingerprint, key)
        return key, normalized

    def compute(self, request: http.Request) -> tuple[tuple, str, dict]:
        """(fingerprint, key, normalised form) of a storable request, touching no shared
        state: safe on a worker thread. The caller remembers the key (`remember`)."""
        key, normalized = keys.key_for(parts(request, True), self.rules)
        return flows.fingerprint(request, self.rules), key, normalized

    def remember(self, fingerprint: tuple, key: str) -> None:
        self.recent.put(fingerprint, key)

    def normalized(self, request: http.Request, storable: bool) -> dict:
        """The normalised form a miss shows, for a request whose key was remembered."""
        return keys.normalize(parts(request, storable), self.rules)


def parts(request: http.Request, storable: bool) -> keys.RequestParts:
    found = flows.request_parts(request)
    return found if storable else replace(found, body=OVERSIZED_BODY)
