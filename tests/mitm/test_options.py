"""The addon's options (SPEC §2) parsed on mitmproxy's own option machinery (taddons).

A bad value must be a ValueError whose message names the option and what it accepts: the
addon turns it into one OptionsError line at start-up, never a traceback at request time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
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
    ("cache_record_errors", "200", "cache_record_errors takes error statuses (400-599), 4xx"),
    ("cache_record_errors", "teapot", "cache_record_errors takes error statuses"),
    ("cache_replay_timing", "fast", "cache_replay_timing takes none, recorded or a positive"),
    ("cache_replay_timing", "0", "cache_replay_timing takes none, recorded or a positive"),
    ("cache_sequence_past_end", "again", "cache_sequence_past_end must be one of last, miss"),
    ("cache_sequence_past_end", "Last", "cache_sequence_past_end must be one of last, miss"),
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


def test_errors_on_purpose_and_replay_timing_are_off_by_default(opts: Options) -> None:
    settings = options.parse(opts)
    assert settings.record_errors.statuses == frozenset()
    assert settings.record_errors.stream_errors is False
    assert settings.replay_timing is None


def test_record_errors_and_replay_timing_are_parsed(opts: Options) -> None:
    settings = parse(opts, cache_record_errors="429, 5xx, stream_error", cache_replay_timing="0.5")
    assert 429 in settings.record_errors.statuses and 503 in settings.record_errors.statuses
    assert 404 not in settings.record_errors.statuses
    assert settings.record_errors.stream_errors is True
    assert settings.replay_timing == 0.5
    assert parse(opts, cache_replay_timing="recorded").replay_timing == 1.0


# --- the stats file --------------------------------------------------------------------------


def test_sequence_slots_are_off_by_default_and_parsed(opts: Options) -> None:
    settings = parse(opts)
    assert (settings.sequence, settings.sequence_past_end) == (False, "last")
    settings = parse(opts, cache_sequence=True, cache_sequence_past_end="miss")
    assert (settings.sequence, settings.sequence_past_end) == (True, "miss")


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


def test_user_rules_are_parsed_into_the_key_rules(opts: Options) -> None:
    settings = parse(
        opts,
        cache_ignore_json=["$.metadata.run_id, $..tool_call_id", "$.messages[*].id"],
        cache_normalize=["uuid\niso-timestamp", r"run-\d+"],
    )
    assert settings.rules.user is not None
    assert settings.rules.user.labels == (
        "cache_ignore_json $.metadata.run_id",
        "cache_ignore_json $..tool_call_id",
        "cache_ignore_json $.messages[*].id",
        "cache_normalize uuid",
        "cache_normalize iso-timestamp",
        r"cache_normalize /run-\d+/",
    )
    assert parse(opts, cache_ignore_json=[], cache_normalize=[]).rules == KeyRules()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("cache_ignore_json", ["metadata.run_id"], "cache_ignore_json: JSON path 'metadata"),
        ("cache_ignore_json", ["$.a["], "cache_ignore_json: JSON path '$.a[': unexpected '['"),
        ("cache_ignore_json", ["$"], "cache_ignore_json: JSON path '$' names the whole body"),
        ("cache_normalize", ["run-(\\d+"], "cache_normalize: 'run-(\\\\d+' is not a regular"),
        ("cache_normalize", ["x*"], "cache_normalize: 'x*' matches the empty string"),
        ("cache_normalize", ["uuids"], "cache_normalize: 'uuids' is not a ready-made pattern"),
    ],
)
def test_a_bad_user_rule_is_one_options_error_naming_it(
    cache: ProviderCache, tmp_path: Path, option: str, value: list[str], message: str
) -> None:
    with taddons.context(cache) as tctx:
        tctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(exceptions.OptionsError) as raised:
            tctx.configure(cache, **{option: value})
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
        assert cache.settings is not None and cache.settings.rules.user is None


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


# --- unknown options and values mitmproxy deferred (issue 13) ---------------------------------


@contextlib.contextmanager
def load_with(cache: ProviderCache, *specs: str) -> Iterator[taddons.context]:
    """Load the addon the way mitmdump does: `--set` is read first, before any script
    declares its options, so mitmproxy defers the values of options it does not know yet."""
    opts = Options()
    opts.set(*specs, defer=True)
    with taddons.context(options=opts) as tctx:
        tctx.master.addons.add(cache)
        yield tctx


def refused_at_load(
    cache: ProviderCache, capsys: pytest.CaptureFixture[str], *specs: str
) -> list[str]:
    with pytest.raises(SystemExit) as stopped, load_with(cache, *specs):
        pass
    assert stopped.value.code == 1
    return capsys.readouterr().err.splitlines()


def test_an_unknown_cache_option_stops_the_proxy_naming_the_valid_ones(
    cache: ProviderCache, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--set cache_mod=replay` used to be kept aside for ever: the proxy recorded."""
    lines = refused_at_load(cache, capsys, "cache_mod=replay", "cache_dir=x")
    assert lines == [
        "provider-cache: unknown option cache_mod (did you mean cache_mode?); the cache "
        "options are: " + ", ".join(options.NAMES)
    ]
    assert "cache_mode" in options.NAMES and "cache_hosts" in options.NAMES


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("cache-mode=replay", "cache-mode (did you mean cache_mode?)"),
        ("Cache_Mode=replay", "Cache_Mode (did you mean cache_mode?)"),
        ("cahce_mode=replay", "cahce_mode (did you mean cache_mode?)"),
        ("cache_hots=api.example.com", "cache_hots (did you mean cache_hosts?)"),
        ("cache_turbo=true", "cache_turbo;"),
    ],
)
def test_near_misses_of_cache_options_are_unknown_options_too(
    cache: ProviderCache, capsys: pytest.CaptureFixture[str], spec: str, named: str
) -> None:
    (line,) = refused_at_load(cache, capsys, spec)
    assert line.startswith(f"provider-cache: unknown option {named}")


def test_every_unknown_cache_option_is_named(
    cache: ProviderCache, capsys: pytest.CaptureFixture[str]
) -> None:
    (line,) = refused_at_load(cache, capsys, "cache_mod=replay", "cache_turbo=1")
    assert line.startswith(
        "provider-cache: unknown options cache_mod (did you mean cache_mode?), cache_turbo;"
    )


def test_other_addons_options_are_left_for_them(cache: ProviderCache) -> None:
    """A script loaded after ours declares its options later: mitmproxy applies them then."""
    with load_with(cache, "test_resolve=api.openai.com=127.0.0.1:1", "cache_mode=replay") as t:
        assert t.options.cache_mode == "replay"
        assert set(t.options.deferred) == {"test_resolve"}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["cache_window_size=abc"], "cache_window_size takes a whole number; got 'abc'"),
        (["cache_window_size="], "cache_window_size takes a whole number; got ''"),
        (
            ["cache_keep_account_headers=maybe"],
            "cache_keep_account_headers takes true or false (or nothing, for true); got 'maybe'",
        ),
        (["cache_dir=a", "cache_dir=b"], "cache_dir takes one value; got ['a', 'b']"),
        (["cache_mode"], "cache_mode takes one value; got []"),
    ],
)
def test_a_value_mitmproxy_cannot_convert_stops_the_proxy_with_one_line(
    cache: ProviderCache, capsys: pytest.CaptureFixture[str], specs: list[str], message: str
) -> None:
    """mitmproxy's own conversion raised out of its script loader, which dropped the addon
    without a word: the proxy ran with no cache at all."""
    assert refused_at_load(cache, capsys, *specs) == [f"provider-cache: {message}"]


def test_deferred_values_are_applied(cache: ProviderCache, tmp_path: Path) -> None:
    specs = ("cache_window_size=7", "cache_keep_account_headers", "cache_hosts=builtin")
    with load_with(cache, *specs, "cache_hosts=llm.internal") as tctx:
        assert tctx.options.deferred == {}
        assert tctx.options.cache_window_size == 7 and tctx.options.cache_keep_account_headers
        assert tctx.options.cache_hosts == ["builtin", "llm.internal"]


def test_a_typed_value_from_config_yaml_is_checked_too(
    cache: ProviderCache, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = Options()
    opts.update_defer(cache_window_size="abc")  # what mitmproxy does with config.yaml
    with taddons.context(options=opts) as tctx, pytest.raises(SystemExit):
        tctx.master.addons.add(cache)
    assert (
        capsys.readouterr().err
        == "provider-cache: cache_window_size takes a whole number; got 'abc'\n"
    )


# --- a bad value at start-up: one line, before mitmproxy listens --------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("cache_mode", "bogus", "cache_mode must be one of record, replay, refresh"),
        ("cache_max_body_size", "abc", "cache_max_body_size must be a positive size"),
        ("cache_hosts", [""], "cache_hosts: empty host pattern; got ['']"),
        ("cache_window_size", 0, "cache_window_size must be at least 1"),
    ],
)
def test_a_bad_value_at_start_up_stops_the_proxy_with_one_line(
    cache: ProviderCache,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: object,
    message: str,
) -> None:
    """It used to be logged as an error: mitmproxy then started its servers, said
    "listening at", and only then exited with a third line."""
    with taddons.context(cache) as tctx, pytest.raises(SystemExit) as stopped:
        tctx.configure(cache, **{option: value})
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"provider-cache: {message}")
    assert cache.files is None


def test_a_bad_value_on_a_script_reload_is_logged_not_fatal(
    cache: ProviderCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload makes a new addon while the proxy runs: it must not end the proxy."""
    server = Proxyserver()
    with taddons.context(server, cache) as tctx:
        server.is_running = True
        tctx.configure(cache, cache_mode="bogus")
    assert cache.settings is None
    assert "provider-cache: cache_mode must be one of" in caplog.text


# --- the start-up line ------------------------------------------------------------------------


def test_the_startup_line_names_mode_cache_entries_and_hosts(opts: Options) -> None:
    settings = parse(opts, cache_mode="replay", cache_dir="recordings")
    assert options.startup_line(settings, 42, read_only=False) == (
        "provider-cache: replay mode, cache recordings/ (42 entries), hosts api.openai.com, "
        "*.openai.azure.com, *.services.ai.azure.com, … (+20 more)"
    )


@pytest.mark.parametrize(
    ("hosts", "entries", "read_only", "said"),
    [
        (["llm.internal"], 1, False, "(1 entry), hosts llm.internal"),
        (["a.x", "b.x", "c.x"], 0, True, "(0 entries, read-only), hosts a.x, b.x, c.x"),
        (["a.x", "b.x", "c.x", "d.x"], 2, False, "(2 entries), hosts a.x, b.x, c.x, … (+1 more)"),
        ([], 0, False, "(0 entries), hosts none (nothing is cached)"),
    ],
)
def test_the_startup_line_counts_and_shortens(
    opts: Options, hosts: list[str], entries: int, read_only: bool, said: str
) -> None:
    line = options.startup_line(parse(opts, cache_hosts=hosts), entries, read_only)
    assert line.startswith("provider-cache: record mode, cache recordings/ ")
    assert line.endswith(said) and "\n" not in line


def test_running_says_the_startup_line_once(
    cache: ProviderCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with store.Store(tmp_path / "cache") as s:
        s.put_many([(b"k1", b"v"), (b"k2", b"v")])

    async def scenario() -> None:
        with taddons.context(Proxyserver(), cache) as tctx:
            tctx.configure(cache, cache_dir=str(tmp_path / "cache"), cache_hosts=["llm.internal"])
            cache.running()
            cache.running()
            cache.done()

    asyncio.run(scenario())
    said = [r.message for r in caplog.records if r.message.startswith("provider-cache: record")]
    assert said == [
        f"provider-cache: record mode, cache {tmp_path / 'cache'}/ (2 entries), hosts llm.internal"
    ]
