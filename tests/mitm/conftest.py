"""Fixtures of the mitmproxy-side unit tests: the cache addon, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mitmproxy.addonmanager import Loader
from mitmproxy.options import Options
from mitmproxy.test import taddons

from provider_cache.mitm import options
from provider_cache.mitm.hooks import ProviderCache


@pytest.fixture
def cache() -> Iterator[ProviderCache]:
    """A fresh ProviderCache; done() closes its store (LMDB allows one open per process)."""
    addon = ProviderCache()
    yield addon
    addon.done()


class Declares:
    """An addon that only declares the cache's options, as ProviderCache.load does."""

    def load(self, loader: Loader) -> None:
        options.declare(loader)


@pytest.fixture
def opts() -> Iterator[Options]:
    """mitmproxy options with the cache's declared, for options.parse."""
    with taddons.context(Declares()) as tctx:
        yield tctx.options
