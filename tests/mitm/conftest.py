"""Fixtures of the mitmproxy-side unit tests: the cache addon, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from provider_cache.mitm.hooks import ProviderCache


@pytest.fixture
def cache() -> Iterator[ProviderCache]:
    """A fresh ProviderCache; done() closes its store (LMDB allows one open per process)."""
    addon = ProviderCache()
    yield addon
    addon.done()
