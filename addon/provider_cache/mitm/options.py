"""The addon's mitmproxy options (SPEC §2), parsed once into typed settings.

Declaration and validation live here so that a bad value is an OptionsError at
start-up, naming the valid values, and never a traceback at request time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mitmproxy.utils import human

from provider_cache.core import hosts
from provider_cache.core.hosts import HostMatcher
from provider_cache.core.keys import KeyRules
from provider_cache.core.names import DEFAULT_MODE, MODES
from provider_cache.core.stats import DEFAULT_WINDOW
from provider_cache.storage.cachedir import DEFAULT_CACHE_DIR, STATS_FILE

if TYPE_CHECKING:
    from mitmproxy.addonmanager import Loader
    from mitmproxy.options import Options

DEFAULT_MAX_BODY = "32m"
DEFAULT_MAP_SIZE = "1g"  # storage.store.DEFAULT_MAP_SIZE, as an option value (a test checks)


#: mitmproxy's own options that `parse` checks too.
ALSO_READ = frozenset({"stream_large_bodies"})


def declare(loader: Loader) -> None:
    """Register every option on mitmproxy's loader (called from the addon's load())."""
    loader.add_option(
        "cache_dir", str, DEFAULT_CACHE_DIR, "LMDB directory of the recordings; created if missing."
    )
    loader.add_option(
        "cache_mode",
        str,
        DEFAULT_MODE,
        "record | replay | refresh | read-old-write-new (see the README).",
        choices=MODES,
    )
    loader.add_option(
        "cache_hosts",
        Sequence[str],
        list(hosts.BUILTIN_HOSTS),
        "Host globs whose traffic is cached; 'builtin' stands for the built-in provider list.",
    )
    loader.add_option(
        "cache_stats_file", str, "", "Stats JSON file; default <cache_dir>/stats.json."
    )
    loader.add_option(
        "cache_ignore_headers", Sequence[str], [], "Request headers (globs) left out of the key."
    )
    loader.add_option(
        "cache_redact_headers", Sequence[str], [], "Request headers (globs) treated as secrets."
    )
    loader.add_option(
        "cache_keep_account_headers",
        bool,
        False,
        "Keep openai-organization, openai-project and anthropic-organization-id in recordings "
        "and in the key; by default they are redacted and count by presence only.",
    )
    loader.add_option(
        "cache_max_body_size",
        str,
        DEFAULT_MAX_BODY,
        "Request or response bodies above this size (e.g. 32m) pass through uncached.",
    )
    loader.add_option(
        "cache_window_size", int, DEFAULT_WINDOW, "Number of recent lookups in the sliding window."
    )
    loader.add_option(
        "cache_map_size",
        str,
        DEFAULT_MAP_SIZE,
        "Initial LMDB map size (address space, not disk); it doubles whenever it fills up.",
    )


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    mode: str
    hosts: tuple[str, ...]
    is_provider: HostMatcher  # not hosts.HostMatcher: the field `hosts` shadows the module
    stats_file: Path
    rules: KeyRules
    max_body_size: int
    window_size: int
    map_size: int
    keep_account_headers: bool = False


def parse(options: Options) -> Settings:
    """Validate the options; raises ValueError with a message fit for the user."""
    if options.cache_mode not in MODES:
        raise ValueError(
            f"cache_mode must be one of {', '.join(MODES)}; got {options.cache_mode!r}"
        )
    if not options.cache_dir:
        raise ValueError("cache_dir must not be empty")
    if getattr(options, "stream_large_bodies", None):
        raise ValueError(
            "stream_large_bodies streams provider bodies past the cache (replay would forward "
            "them, record would store them empty): unset it; cache_max_body_size bounds what "
            "is cached"
        )
    cache_dir = Path(options.cache_dir).expanduser()
    max_body = _size(options.cache_max_body_size, "cache_max_body_size", DEFAULT_MAX_BODY)
    map_size = _size(options.cache_map_size, "cache_map_size", DEFAULT_MAP_SIZE)
    if options.cache_window_size < 1:
        raise ValueError(f"cache_window_size must be at least 1; got {options.cache_window_size}")
    try:
        host_patterns = hosts.expand(options.cache_hosts)
    except ValueError as e:
        raise ValueError(f"cache_hosts: {e}; got {list(options.cache_hosts)!r}") from None
    return Settings(
        cache_dir=cache_dir,
        mode=options.cache_mode,
        hosts=host_patterns,
        is_provider=HostMatcher(host_patterns),
        stats_file=Path(options.cache_stats_file).expanduser()
        if options.cache_stats_file
        else cache_dir / STATS_FILE,
        rules=KeyRules.with_extra(
            ignored=_names(options.cache_ignore_headers, "cache_ignore_headers"),
            secret=_names(options.cache_redact_headers, "cache_redact_headers"),
            keep_account=options.cache_keep_account_headers,
        ),
        max_body_size=max_body,
        window_size=options.cache_window_size,
        map_size=map_size,
        keep_account_headers=options.cache_keep_account_headers,
    )


def _names(values: Sequence[str], option: str) -> tuple[str, ...]:
    names = tuple(v.strip().lower() for v in values)
    if any(not n or any(c.isspace() or c == ":" for c in n) for n in names):
        raise ValueError(f"{option} takes header names (globs allowed); got {list(values)!r}")
    return names


def _size(value: str, option: str, example: str) -> int:
    try:
        size = human.parse_size(value)
    except ValueError:
        size = None
    if not size or size <= 0:
        raise ValueError(f"{option} must be a positive size such as {example}; got {value!r}")
    return size
