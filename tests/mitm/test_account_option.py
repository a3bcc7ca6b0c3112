"""cache_keep_account_headers (issue 12): account identifiers are redacted unless kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mitmproxy import exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.options import Options
from mitmproxy.test import taddons

from provider_cache.core.keys import KeyRules
from provider_cache.mitm import options


class Declares:
    def load(self, loader: Loader) -> None:
        options.declare(loader)


@pytest.fixture
def opts() -> Iterator[Options]:
    with taddons.context(Declares()) as tctx:
        yield tctx.options


def test_account_headers_are_redacted_by_default(opts: Options) -> None:
    settings = options.parse(opts)
    assert opts.cache_keep_account_headers is False
    assert settings.keep_account_headers is False
    assert settings.rules == KeyRules()
    assert settings.rules.is_account("openai-organization")


def test_the_option_keeps_them_and_joins_the_other_rules(opts: Options) -> None:
    opts.update(cache_keep_account_headers=True, cache_redact_headers=["x-team"])
    settings = options.parse(opts)
    assert settings.keep_account_headers is True
    assert settings.rules == KeyRules.with_extra(secret=("x-team",), keep_account=True)
    assert not settings.rules.is_account("openai-organization")
    assert not settings.rules.is_secret("openai-project")
    assert settings.rules.is_secret("x-team") and settings.rules.is_secret("authorization")


def test_the_option_takes_a_boolean_from_the_command_line(opts: Options) -> None:
    opts.set("cache_keep_account_headers=true")
    assert options.parse(opts).keep_account_headers is True
    with pytest.raises(exceptions.OptionsError):
        opts.set("cache_keep_account_headers=maybe")
