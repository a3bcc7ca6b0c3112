"""The addon's options (SPEC §2) parsed on mitmproxy's own option machinery (taddons).

A bad value must be a ValueError whose message names the option and what it accepts: the
addon turns it into one OptionsError line at start-up, never a traceback at request time.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.options import Options
from mitmproxy.test import taddons
from mitmproxy.utils import human

from provider_cache.core.hosts import BUILTIN_HOSTS
from provider_cache.core.keys import KeyRules
from provider_cache.mitm import options
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.storage import store
from tests.mitm.conftest import Declares


def parse(opts: Options, **values: object) -> options.Settings:
    opts.update(**values)
    return options.parse(opts)


def test_defaults(opts: Options) -> None:
    settings = options.parse(opts)
    assert settings.mode == "record"
    assert settings.cache_dir == Path("recordings")
    assert settings.stats_file == Path("recordings") / "stats.json"
    assert settings.hosts == BUILTIN_HOSTS
    assert settings.max_body_size == 32 << 20
    assert settings.map_size == 1 << 30
    assert settings.window_size == 100
    assert settings.rules == KeyRules()


def test_settings_are_frozen(opts: Options) -> None:
    settings = options.parse(opts)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.mode = "replay"  # type: ignore[misc]


@pytest.mark.parametrize("mode", ["record", "replay", "refresh", "read-old-write-new"])
def test_every_mode_is_accepted(opts: Options, mode: str) -> None:
    assert parse(opts, cache_mode=mode).mode == mode


BAD_VALUES: list[tuple[str, object, str]] = [
    (
        "cache_mode",
        "offline",
        "cache_mode must be one of record, replay, refresh, read-old-write-new; got 'offline'",
    ),
    ("cache_mode", "Replay", "cache_mode must be one of record, replay, refresh"),
    ("cache_mode", "", "cache_mode must be one of record, replay, refresh"),
    ("cache_dir", "", "cache_dir must not be empty"),
    ("cache_max_body_size", "huge", "cache_max_body_size must be a positive size such as 32m"),
    ("cache_max_body_size", "0", "cache_max_body_size must be a positive size such as 32m"),
    ("cache_max_body_size", "-1", "cache_max_body_size must be a positive size such as 32m"),
    ("cache_max_body_size", "", "cache_max_body_size must be a positive size such as 32m"),
    ("cache_max_body_size", "1.5m", "cache_max_body_size must be a positive size such as 32m"),
    ("cache_map_size", "lots", "cache_map_size must be a positive size such as 1g"),
    ("cache_map_size", "0", "cache_map_size must be a positive size such as 1g"),
    ("cache_window_size", 0, "cache_window_size must be at least 1; got 0"),
    ("cache_window_size", -3, "cache_window_size must be at least 1; got -3"),
    ("cache_ignore_headers", ["a b"], "cache_ignore_headers takes header names (globs allowed)"),
    ("cache_ignore_headers", [""], "cache_ignore_headers takes header names (globs allowed)"),
    ("cache_ignore_headers", ["  "], "cache_ignore_headers takes header names (globs allowed)"),
    ("cache_ignore_headers", ["x-a:b"], "cache_ignore_headers takes header names (globs allowed)"),
    ("cache_redact_headers", ["ok", "a\tb"], "cache_redact_headers takes header names"),
    ("cache_redact_headers", ["x-key:"], "cache_redact_headers takes header names"),
]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    BAD_VALUES,
    ids=[f"{b[0]}={b[1]!r}" for b in BAD_VALUES],
)
def test_bad_value_is_a_value_error_naming_the_valid_values(
    opts: Options, option: str, value: object, message: str
) -> None:
    opts.update(**{option: value})
    with pytest.raises(ValueError) as raised:
        options.parse(opts)
    assert message in str(raised.value)
    assert repr(value) in str(raised.value) or option == "cache_dir"  # the value given
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("hosts", [[""], ["api.openai.com", "  "], ["."]])
def test_an_empty_host_pattern_is_a_value_error(opts: Options, hosts: list[str]) -> None:
    opts.update(cache_hosts=hosts)
    with pytest.raises(ValueError, match="empty host pattern"):
        options.parse(opts)


def test_an_empty_host_pattern_error_names_the_option(opts: Options) -> None:
    opts.update(cache_hosts=["api.openai.com", ""])
    with pytest.raises(ValueError, match="cache_hosts"):
        options.parse(opts)


def test_the_addon_reports_a_bad_value_as_one_options_error(
    cache: ProviderCache, tmp_path: Path
) -> None:
    """Once running, a bad value from the options editor is refused, the old settings kept."""
    with taddons.context(cache) as tctx:
        tctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(exceptions.OptionsError, match="cache_map_size must be a positive"):
            tctx.configure(cache, cache_map_size="lots")
        assert cache.settings is not None and cache.settings.map_size == 1 << 30


# --- the stats file --------------------------------------------------------------------------


def test_stats_file_defaults_to_the_cache_dirs(opts: Options, tmp_path: Path) -> None:
    settings = parse(opts, cache_dir=str(tmp_path / "rec"))
    assert settings.stats_file == tmp_path / "rec" / "stats.json"


def test_stats_file_follows_the_cache_dir_when_only_that_changes(opts: Options) -> None:
    assert parse(opts, cache_dir="one").stats_file == Path("one/stats.json")
    assert parse(opts, cache_dir="two").stats_file == Path("two/stats.json")


def test_an_explicit_stats_file_is_used(opts: Options, tmp_path: Path) -> None:
    settings = parse(opts, cache_dir=str(tmp_path / "rec"), cache_stats_file="ci/shard-1.json")
    assert settings.stats_file == Path("ci/shard-1.json")


def test_home_is_expanded_in_both_paths(opts: Options, tmp_path: Path) -> None:
    settings = parse(opts, cache_dir="~/rec", cache_stats_file="~/stats/run.json")
    home = tmp_path / "home"  # the test fixture's HOME
    assert settings.cache_dir == home / "rec"
    assert settings.stats_file == home / "stats" / "run.json"
    assert parse(opts, cache_stats_file="").stats_file == home / "rec" / "stats.json"


# --- hosts, headers, sizes -------------------------------------------------------------------


def test_builtin_alias_extends_the_builtin_list(opts: Options) -> None:
    settings = parse(opts, cache_hosts=["builtin", "LLM.Internal."])
    assert settings.hosts == (*BUILTIN_HOSTS, "llm.internal")
    assert settings.is_provider("api.openai.com")
    assert settings.is_provider("myres.openai.azure.com")
    assert settings.is_provider("llm.internal")
    assert settings.is_provider("LLM.internal.")
    assert not settings.is_provider("example.com")


def test_hosts_without_the_alias_replace_the_builtin_list(opts: Options) -> None:
    settings = parse(opts, cache_hosts=["*.llm.internal"])
    assert settings.hosts == ("*.llm.internal",)
    assert settings.is_provider("a.llm.internal")
    assert not settings.is_provider("api.openai.com")


def test_repeated_hosts_are_listed_once_in_first_place(opts: Options) -> None:
    settings = parse(opts, cache_hosts=["api.anthropic.com", "builtin", "API.ANTHROPIC.COM"])
    assert settings.hosts[0] == "api.anthropic.com"
    assert settings.hosts.count("api.anthropic.com") == 1
    assert set(settings.hosts) == set(BUILTIN_HOSTS)


def test_extra_headers_join_the_built_in_rules_in_lower_case(opts: Options) -> None:
    settings = parse(
        opts, cache_ignore_headers=[" X-Trace-* ", "X-Run"], cache_redact_headers=["X-Team-Token"]
    )
    assert settings.rules == KeyRules.with_extra(("x-trace-*", "x-run"), ("x-team-token",))
    assert settings.rules.is_ignored("x-trace-id") and settings.rules.is_ignored("x-run")
    assert settings.rules.is_secret("x-team-token")
    assert settings.rules.is_secret("authorization")  # the built-in rules still hold
    assert not settings.rules.is_ignored("content-type")


@pytest.mark.parametrize(
    ("value", "size"),
    [("1024", 1024), ("1k", 1 << 10), ("32m", 32 << 20), ("2g", 2 << 30), ("1t", 1 << 40)],
)
def test_sizes(opts: Options, value: str, size: int) -> None:
    settings = parse(opts, cache_max_body_size=value, cache_map_size=value)
    assert (settings.max_body_size, settings.map_size) == (size, size)


def test_window_size(opts: Options) -> None:
    assert parse(opts, cache_window_size=1).window_size == 1


def test_the_map_size_default_is_the_stores() -> None:
    """One default in two forms: the option's text and the store's bytes (read-only tools)."""
    assert human.parse_size(options.DEFAULT_MAP_SIZE) == store.DEFAULT_MAP_SIZE


def test_stream_large_bodies_is_refused() -> None:
    """Streamed provider bodies would pass the cache by: replay would forward them."""
    with taddons.context(Declares(), Proxyserver()) as tctx:
        assert options.parse(tctx.options).mode == "record"  # unset: fine
        with pytest.raises(ValueError, match="stream_large_bodies streams provider bodies"):
            parse(tctx.options, stream_large_bodies="10k")


# --- cache_keep_account_headers (issue 12) ---------------------------------------------


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
