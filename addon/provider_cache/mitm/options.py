"""The addon's mitmproxy options (SPEC §2), parsed once into typed settings.

Declaration and validation live here so that a bad value, or an unknown `cache_*`
option, stops mitmproxy at start-up with one line naming the valid values (before it
listens), is an OptionsError once it runs, and is never a traceback at request time.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from mitmproxy import exceptions
from mitmproxy.utils import human

from provider_cache.core import hosts, slots, userrules
from provider_cache.core.admission import NO_ERRORS, RecordErrors, parse_record_errors
from provider_cache.core.hosts import HostMatcher
from provider_cache.core.keys import KeyRules
from provider_cache.core.names import DEFAULT_MODE, MODES
from provider_cache.core.pacing import parse_timing
from provider_cache.core.remoteobject import URL_FORM, RemoteLocation, parse_location
from provider_cache.core.stats import DEFAULT_WINDOW
from provider_cache.storage.cachedir import DEFAULT_CACHE_DIR, STATS_FILE

if TYPE_CHECKING:
    from mitmproxy.addonmanager import Loader
    from mitmproxy.options import Options
    from mitmproxy.optmanager import OptManager

DEFAULT_MAX_BODY = "32m"
DEFAULT_MAP_SIZE = "1g"  # storage.store.DEFAULT_MAP_SIZE, as an option value (a test checks)
#: cache_remote_write: write when the credentials allow it, never, or fail without writes.
REMOTE_WRITE_MODES = ("auto", "false", "true")


#: mitmproxy's own options that `parse` checks too.
ALSO_READ = frozenset({"stream_large_bodies"})


class Option(NamedTuple):
    name: str
    typespec: type
    default: object
    help: str
    choices: tuple[str, ...] | None = None


#: Every option of the addon, declared in this order.
OPTIONS: tuple[Option, ...] = (
    Option(
        "cache_dir", str, DEFAULT_CACHE_DIR, "LMDB directory of the recordings; created if missing."
    ),
    Option(
        "cache_mode",
        str,
        DEFAULT_MODE,
        "record | replay | refresh | read-old-write-new (see the README).",
        MODES,
    ),
    Option(
        "cache_hosts",
        Sequence[str],
        list(hosts.BUILTIN_HOSTS),
        "Host globs whose traffic is cached; 'builtin' stands for the built-in provider list. "
        "TLS to other hosts is tunnelled untouched (see allow_hosts).",
    ),
    Option("cache_stats_file", str, "", "Stats JSON file; default <cache_dir>/stats.json."),
    Option(
        "cache_ignore_headers", Sequence[str], [], "Request headers (globs) left out of the key."
    ),
    Option(
        "cache_redact_headers", Sequence[str], [], "Request headers (globs) treated as secrets."
    ),
    Option(
        "cache_keep_account_headers",
        bool,
        False,
        "Keep openai-organization, openai-project and anthropic-organization-id in recordings "
        "and in the key; by default they are redacted and count by presence only.",
    ),
    Option(
        "cache_ignore_json",
        Sequence[str],
        [],
        "JSON body fields left out of the key: $.metadata.run_id, $.messages[*].id, "
        "$..tool_call_id (any depth); several per value separated by commas or new lines.",
    ),
    Option(
        "cache_normalize",
        Sequence[str],
        [],
        "Regular expressions, or uuid, iso-timestamp, hex-id, replaced by a placeholder in "
        "JSON string values, text bodies and query values before keying; one per line.",
    ),
    Option(
        "cache_max_body_size",
        str,
        DEFAULT_MAX_BODY,
        "Request or response bodies above this size (e.g. 32m) pass through uncached.",
    ),
    Option(
        "cache_window_size", int, DEFAULT_WINDOW, "Number of recent lookups in the sliding window."
    ),
    Option(
        "cache_map_size",
        str,
        DEFAULT_MAP_SIZE,
        "Initial LMDB map size (address space, not disk); it doubles whenever it fills up.",
    ),
    Option(
        "cache_remote",
        str,
        "",
        f"Shared remote tier, {URL_FORM} (S3, R2, MinIO, GCS interop); empty: none. Endpoint, "
        "region and credentials come from the standard AWS configuration.",
    ),
    Option(
        "cache_remote_write",
        str,
        "auto",
        "auto (upload what is recorded when the credentials allow it) | false (read only) | "
        "true (stop at start-up if writes are refused).",
        REMOTE_WRITE_MODES,
    ),
    Option(
        "cache_record_errors",
        str,
        "",
        "Error answers recorded too, so error-path tests replay offline: statuses (429, 503), "
        "4xx, 5xx, and stream_error (a 2xx stream that reported a failure), comma-separated; "
        "empty: none. Cut, undecodable or too large answers are never recorded.",
    ),
    Option(
        "cache_replay_timing",
        str,
        "none",
        "Pace of replayed streams: none (as fast as possible) | recorded (as the chunks "
        "arrived) | a factor of the recorded pace (0.5: twice as fast).",
    ),
    Option(
        "cache_sequence",
        bool,
        False,
        "Repeated identical requests get their own answers, in order: the n-th identical "
        "request of a run (of a test, under the pytest plugin) records and replays the n-th "
        "answer of its key. Off: one answer per key.",
    ),
    Option(
        "cache_sequence_past_end",
        str,
        slots.PAST_END_LAST,
        "With cache_sequence, a request past the last recorded answer of its key: last (serve "
        "that answer again) | miss (the mode's miss: record forwards and records it, replay "
        "answers the miss).",
        slots.PAST_END_CHOICES,
    ),
)
NAMES = tuple(option.name for option in OPTIONS)
#: What a value of each option type must look like, for the error that names it.
_TYPE_WANTED = {int: "a whole number", bool: "true or false (or nothing, for true)"}


def declare(loader: Loader) -> None:
    """Register every option on mitmproxy's loader (called from the addon's load())."""
    for option in OPTIONS:
        loader.add_option(
            option.name, option.typespec, option.default, option.help, choices=option.choices
        )


def apply_deferred(opts: OptManager) -> None:
    """Apply the `--set cache_*` values mitmproxy kept aside; ValueError for a bad one.

    mitmdump reads `--set` before it loads scripts, so it keeps the values of options no
    addon has declared yet ("deferred") and applies them right after the load() that
    declares them. A typo (`cache_mod=replay`) is never declared and stays deferred without
    a word: the proxy would record. A value of the wrong type (`cache_window_size=abc`)
    raises out of mitmproxy's script loader, which drops the addon just as quietly: the
    proxy would run with no cache at all. Called at the end of load(), this catches both.
    """
    deferred = opts.deferred
    ours = [name for name in deferred if _looks_like_ours(name)]
    unknown = [name for name in ours if name not in NAMES]
    if unknown:
        raise ValueError(_unknown_message(unknown))
    for name in ours:
        _apply(opts, name, deferred.pop(name))


def stop_at_startup(message: str) -> NoReturn:
    """End mitmproxy, exit status 1, with one line on stderr, before it serves anything.

    Logging an error would stop it too, but only once its servers are up, with two more
    lines ("HTTP(S) proxy listening at …", "Error logged during startup, exiting..."):
    mitmdump loads scripts while it binds its ports. SystemExit passes through the script
    loader (which catches Exception) and ends the event loop. Nothing of ours is open yet.
    """
    print(f"provider-cache: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _looks_like_ours(name: str) -> bool:
    """`cache_*`, and near misses of our names (`cache-mode`, `Cache_Mode`, `cahce_mode`)."""
    return _spelled(name).startswith("cache") or _closest(name) is not None


def _closest(name: str) -> str | None:
    close = difflib.get_close_matches(_spelled(name), NAMES, n=1, cutoff=0.8)
    return close[0] if close else None


def _spelled(name: str) -> str:
    return name.lower().replace("-", "_")


def _unknown_message(names: list[str]) -> str:
    named = ", ".join(
        f"{name} (did you mean {close}?)" if (close := _closest(name)) else name for name in names
    )
    plural = "s" if len(names) > 1 else ""
    return f"unknown option{plural} {named}; the cache options are: {', '.join(NAMES)}"


def _apply(opts: OptManager, name: str, value: object) -> None:
    """One deferred value, parsed as mitmproxy would: strings from `--set`, typed values
    from config.yaml."""
    strings = getattr(value, "val", None)  # mitmproxy's _UnconvertedStrings
    try:
        if isinstance(strings, list):
            opts.set(*([f"{name}={s}" for s in strings] or [name]))
        else:
            opts.update(**{name: value})
    except (exceptions.OptionsError, TypeError):  # TypeError: mitmproxy's type check
        given = strings if isinstance(strings, list) else [value]
        shown = repr(given[0]) if len(given) == 1 else repr(given)
        option = OPTIONS[NAMES.index(name)]
        wanted = _TYPE_WANTED.get(option.typespec, "one value")
        raise ValueError(f"{name} takes {wanted}; got {shown}") from None


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
    remote: RemoteLocation | None = None
    remote_write: str = "auto"
    record_errors: RecordErrors = NO_ERRORS
    #: The factor of the recorded pace replayed streams follow; None: as fast as possible.
    replay_timing: float | None = None
    #: cache_sequence (core/slots.py), and what a request past the last slot gets.
    sequence: bool = False
    sequence_past_end: str = slots.PAST_END_LAST


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
    remote = _remote(options.cache_remote)
    if options.cache_remote_write not in REMOTE_WRITE_MODES:
        raise ValueError(
            f"cache_remote_write must be one of {', '.join(REMOTE_WRITE_MODES)}; "
            f"got {options.cache_remote_write!r}"
        )
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
            user=userrules.parse(options.cache_ignore_json, options.cache_normalize),
        ),
        max_body_size=max_body,
        window_size=options.cache_window_size,
        map_size=map_size,
        keep_account_headers=options.cache_keep_account_headers,
        remote=remote,
        remote_write=options.cache_remote_write,
        record_errors=parse_record_errors(options.cache_record_errors),
        replay_timing=parse_timing(options.cache_replay_timing),
        sequence=options.cache_sequence,
        sequence_past_end=slots.parse_past_end(options.cache_sequence_past_end),
    )


def _remote(value: str) -> RemoteLocation | None:
    """The remote tier's location; the value is not repeated (it may hold credentials)."""
    if not value.strip():
        return None
    try:
        return parse_location(value)
    except ValueError as e:
        raise ValueError(f"cache_remote: {e}") from None


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


#: How many of the cached hosts the start-up line names.
SHOWN_HOSTS = 3


def startup_line(
    settings: Settings, entries: int, read_only: bool, remote: str | None = None
) -> str:
    """What the proxy says once it runs: mode, cache directory and its size, hosts, and the
    remote tier as its start-up probe found it (mitm/remote.py)."""
    stored = f"{entries} {'entry' if entries == 1 else 'entries'}"
    if read_only:
        stored += ", read-only"
    named = ", ".join(settings.hosts[:SHOWN_HOSTS]) or "none (nothing is cached)"
    if len(settings.hosts) > SHOWN_HOSTS:
        named += f", … (+{len(settings.hosts) - SHOWN_HOSTS} more)"
    line = (
        f"provider-cache: {settings.mode} mode, cache {settings.cache_dir}/ ({stored}), "
        f"hosts {named}"
    )
    return f"{line}, remote {remote}" if remote else line
