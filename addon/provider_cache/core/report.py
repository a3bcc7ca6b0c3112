"""Reading, summing and judging stats documents (SPEC §7): the logic behind the CI gate.

Pure: takes parsed JSON, returns dicts and text. Several documents are shards of
one CI run and are summed; the gate passes when the summed hit rate reaches the
threshold (a run with no provider lookups has nothing stale and passes, unless a minimum
number of lookups is set).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeGuard

from provider_cache.core.rejections import EXPLAINED, REASONS
from provider_cache.core.stats import (
    HOST_TOTALS,
    REMOTE_KEY_LISTS,
    REMOTE_KEYS_LIMIT,
    REMOTE_TOTALS,
    SCHEMA,
    TEST_TOTALS,
    TESTS_LIMIT,
    TIERS,
    TOTALS,
    rate,
)


class BadStats(ValueError):
    """A document that is not a provider-cache stats file of a known schema."""


def validate(doc: object, source: str) -> dict:
    """The document as it is, if everything the gate reads has the type it expects.

    Only the totals are required; the other fields may be absent (older or partial
    writers), but when present they must have their shape, so that merge() and the
    renderers cannot fail on a wrong type. Unknown fields are left alone.
    """
    if not isinstance(doc, dict) or "hits" not in doc or "misses" not in doc:
        raise BadStats(f"{source}: not a provider-cache stats file")
    if doc.get("schema") != SCHEMA:
        raise BadStats(f"{source}: unknown stats schema {doc.get('schema')!r} (expected {SCHEMA})")
    for name in TOTALS:
        if not _is_count(doc.get(name)):
            raise BadStats(f"{source}: field {name!r} is not a count")
    try:
        _check_shape(doc)
    except _WrongType as e:
        raise BadStats(f"{source}: field {e.path!r} is not {e.expected}") from None
    return doc


class _WrongType(Exception):
    def __init__(self, path: str, expected: str):
        self.path, self.expected = path, expected


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: object) -> TypeGuard[float]:
    """A finite JSON number (json.loads also gives NaN and Infinity); a boolean is none."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _optional(doc: dict, name: str, path: str, check: Callable[[object], bool], what: str) -> None:
    if name in doc and not check(doc[name]):
        raise _WrongType(path, what)


def _object(value: object, path: str, what: str = "an object") -> dict:
    if not isinstance(value, dict):
        raise _WrongType(path, what)
    return value


def _list(value: object, path: str) -> list:
    if not isinstance(value, list):
        raise _WrongType(path, "a list")
    return value


def _is_rate(value: object) -> bool:
    return value is None or _is_number(value)


def _is_seconds(value: object) -> bool:
    return value is None or (_is_number(value) and value >= 0)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _check_shape(doc: dict) -> None:
    _optional(doc, "mode", "mode", _is_str, "a string")
    for name in ("started_at", "updated_at"):
        _optional(doc, name, name, _is_number, "a number")
    _optional(doc, "hit_rate", "hit_rate", _is_rate, "a number or null")
    for name in ("rate_limited", "missed_dropped"):
        _optional(doc, name, name, _is_count, "a count")
    _optional(doc, "retry_after", "retry_after", _is_seconds, "a number of seconds or null")
    if "rejected" in doc:
        _check_rejected(doc["rejected"], "rejected")
    if "window" in doc:
        window = _object(doc["window"], "window")
        for name in ("size", "hits", "misses"):
            _optional(window, name, f"window.{name}", _is_count, "a count")
        _optional(window, "hit_rate", "window.hit_rate", _is_rate, "a number or null")
    if "by_host" in doc:
        for host, value in _object(doc["by_host"], "by_host").items():
            at = f"by_host[{host!r}]"
            counts = _object(value, at)
            for name in HOST_TOTALS:
                _optional(counts, name, f"{at}.{name}", _is_count, "a count")
            _optional(counts, "hit_rate", f"{at}.hit_rate", _is_rate, "a number or null")
            if "rejected" in counts:
                _check_rejected(counts["rejected"], f"{at}.rejected")
    if "missed" in doc:
        for i, item in enumerate(_list(doc["missed"], "missed")):
            _check_missed(item, f"missed[{i}]")
    if "tiers" in doc:
        tiers = _object(doc["tiers"], "tiers")
        for name in TIERS:
            _optional(tiers, name, f"tiers.{name}", _is_count, "a count")
    if "remote" in doc:
        _check_remote(_object(doc["remote"], "remote"))
    if "unused" in doc:
        unused = _object(doc["unused"], "unused")
        _optional(unused, "count", "unused.count", _is_count, "a count")
        for j, key in enumerate(_list(unused.get("keys", []), "unused.keys")):
            if not _is_str(key):
                raise _WrongType(f"unused.keys[{j}]", "a string")
    if "oldest_used" in doc:
        oldest = _object(doc["oldest_used"], "oldest_used")
        if not _is_number(oldest.get("recorded_at")):
            raise _WrongType("oldest_used.recorded_at", "a number")
        _optional(oldest, "key", "oldest_used.key", _is_str, "a string")
    if "by_test" in doc:
        for test, value in _object(doc["by_test"], "by_test").items():
            counts = _object(value, f"by_test[{test!r}]")
            for name in TEST_TOTALS:
                _optional(counts, name, f"by_test[{test!r}].{name}", _is_count, "a count")


def _check_rejected(value: object, at: str) -> None:
    """Counts by reason; a reason this version does not know (a newer proxy's) is kept."""
    for reason, count in _object(value, at).items():
        if not _is_count(count):
            raise _WrongType(f"{at}.{reason}", "a count")


def _check_remote(remote: dict) -> None:
    _optional(remote, "location", "remote.location", _is_str, "a string")
    for name in REMOTE_TOTALS:
        _optional(remote, name, f"remote.{name}", _is_count, "a count")
    for name in REMOTE_KEY_LISTS:
        for j, key in enumerate(_list(remote.get(name, []), f"remote.{name}")):
            if not _is_str(key):
                raise _WrongType(f"remote.{name}[{j}]", "a string")


def _check_missed(value: object, at: str) -> None:
    item = _object(value, at)
    for name in ("method", "url", "key"):
        if not _is_str(item.get(name)):
            raise _WrongType(f"{at}.{name}", "a string")
    if not _is_count(item.get("count")):
        raise _WrongType(f"{at}.count", "a count")
    for j, test in enumerate(_list(item.get("tests", []), f"{at}.tests")):
        if not _is_str(test):
            raise _WrongType(f"{at}.tests[{j}]", "a string")
    if "request" in item:
        request = _object(item["request"], f"{at}.request")
        _optional(request, "body", f"{at}.request.body", _is_str, "a string")
    if item.get("closest") is None:
        return
    closest = _object(item["closest"], f"{at}.closest", "an object or null")
    if not _is_str(closest.get("key")):
        raise _WrongType(f"{at}.closest.key", "a string")
    for j, line in enumerate(_list(closest.get("differences"), f"{at}.closest.differences")):
        if not _is_str(line):
            raise _WrongType(f"{at}.closest.differences[{j}]", "a string")
    _optional(closest, "more", f"{at}.closest.more", _is_count, "a count")


def merge(docs: list[dict]) -> dict:
    """Sum shards: totals, windows, per-host counts and the missed requests (by key)."""
    merged: dict = {name: sum(d[name] for d in docs) for name in TOTALS}
    modes = sorted({d.get("mode", "?") for d in docs})
    merged["mode"] = modes[0] if len(modes) == 1 else "mixed"
    merged["shards"] = len(docs)
    merged["rate_limited"] = sum(d.get("rate_limited", 0) for d in docs)
    waits = [d["retry_after"] for d in docs if d.get("retry_after") is not None]
    merged["retry_after"] = max(waits) if waits else None
    merged["hit_rate"] = rate(merged["hits"], merged["misses"])
    window_hits = sum(d.get("window", {}).get("hits", 0) for d in docs)
    window_misses = sum(d.get("window", {}).get("misses", 0) for d in docs)
    merged["window"] = {
        "size": sum(d.get("window", {}).get("size", 0) for d in docs),
        "hits": window_hits,
        "misses": window_misses,
        "hit_rate": rate(window_hits, window_misses),
    }
    merged["rejected"] = sum_rejected(d.get("rejected", {}) for d in docs)
    by_host: dict[str, dict] = {}
    for doc in docs:
        for host, counts in doc.get("by_host", {}).items():
            into = by_host.setdefault(host, {**dict.fromkeys(HOST_TOTALS, 0), "rejected": []})
            for name in HOST_TOTALS:
                into[name] += counts.get(name, 0)
            into["rejected"].append(counts.get("rejected", {}))
    for counts in by_host.values():
        rejected = sum_rejected(counts["rejected"])
        counts["rejected"] = {reason: n for reason, n in rejected.items() if n}
        counts["hit_rate"] = rate(counts["hits"], counts["misses"])
    merged["by_host"] = dict(sorted(by_host.items()))
    missed: dict[str, dict] = {}
    for doc in docs:
        for item in doc.get("missed", []):
            if item["key"] in missed:
                into = missed[item["key"]]
                into["count"] += item["count"]
                tests = dict.fromkeys([*into.get("tests", []), *item.get("tests", [])])
                into["tests"] = list(tests)[:TESTS_LIMIT]
            else:
                missed[item["key"]] = dict(item)
    merged["missed"] = list(missed.values())
    merged["missed_dropped"] = sum(d.get("missed_dropped", 0) for d in docs)
    if any("tiers" in d for d in docs):  # a shard without a remote tier: all its hits local
        tiers = [d.get("tiers", {"local": d["hits"]}) for d in docs]
        merged["tiers"] = {t: sum(shard.get(t, 0) for shard in tiers) for t in TIERS}
    remotes = [d["remote"] for d in docs if "remote" in d]
    if remotes:
        merged["remote"] = _merge_remote(remotes)
    views = [d["unused"] for d in docs if isinstance(d.get("unused"), dict)]
    if views:  # each proxy saw the run's use up to its end: the last to end saw the most
        merged["unused"] = min(views, key=lambda view: view.get("count", 0))
    oldest = [d["oldest_used"] for d in docs if isinstance(d.get("oldest_used"), dict)]
    if oldest:
        merged["oldest_used"] = min(oldest, key=lambda used: used.get("recorded_at", 0))
    if any("by_test" in d for d in docs):  # xdist: each worker's proxy counts its tests
        by_test: dict[str, dict] = {}
        for doc in docs:
            for test, counts in doc.get("by_test", {}).items():
                into = by_test.setdefault(test, dict.fromkeys(TEST_TOTALS, 0))
                for name in TEST_TOTALS:
                    into[name] += counts.get(name, 0)
        for counts in by_test.values():
            counts["hit_rate"] = rate(counts["hits"], counts["misses"])
        merged["by_test"] = dict(sorted(by_test.items()))
    return merged


def tests_that_missed(merged: dict) -> list[str]:
    """The tests with a miss, by name (SPEC §12)."""
    return [test for test, c in merged.get("by_test", {}).items() if c.get("misses")]


def sum_rejected(parts: Iterable[dict]) -> dict[str, int]:
    """Counts by reason summed: every known reason (0 when none), then any unknown one."""
    total = dict.fromkeys(REASONS, 0)
    for part in parts:
        for reason, count in part.items():
            total[reason] = total.get(reason, 0) + count
    return total


def _merge_remote(remotes: list[dict]) -> dict:
    """Shards' remote tiers: counts summed, key lists joined (capped), one location or mixed."""
    locations = sorted({r.get("location", "?") for r in remotes})
    merged: dict = {"location": locations[0] if len(locations) == 1 else "mixed"}
    merged |= {name: sum(r.get(name, 0) for r in remotes) for name in REMOTE_TOTALS}
    for name in REMOTE_KEY_LISTS:
        keys = dict.fromkeys(key for r in remotes for key in r.get(name, []))
        merged[name] = list(keys)[:REMOTE_KEYS_LIMIT]
    return merged


def gate(merged: dict, min_hit_rate: float | None, min_lookups: int = 0) -> tuple[bool, str]:
    """(passed, one-line verdict). Too few lookups fail first: with none, nothing is stale,
    but a client that bypassed the proxy made none either."""
    hit_rate = merged["hit_rate"]
    lookups = merged["hits"] + merged["misses"]
    if lookups < min_lookups:
        made = f"{lookups} provider lookup{'' if lookups == 1 else 's'}"
        return (
            False,
            f"{made}, fewer than the minimum {min_lookups}: did the client bypass the proxy?",
        )
    if min_hit_rate is None:
        return True, f"hit rate {percent(hit_rate)} ({lookups} lookups); no threshold set"
    if hit_rate is None:
        return True, "no provider lookups were made: nothing is stale"
    verdict = "meets" if hit_rate >= min_hit_rate else "is below"
    return hit_rate >= min_hit_rate, (
        f"hit rate {percent(hit_rate)} {verdict} the threshold {percent(min_hit_rate)}"
        f" ({merged['hits']} hits, {merged['misses']} misses)"
    )


@dataclass(frozen=True)
class Freshness:
    """The gate's checks beyond the hit rate (SPEC §7): recordings no test uses any more,
    and recordings so old that the provider may answer otherwise by now."""

    fail_unused: bool = False
    #: Seconds: fail when a recording this run used is older.
    max_age: float | None = None
    #: Seconds: only say so.
    warn_age: float | None = None


def freshness(merged: dict, wanted: Freshness, now: float) -> tuple[list[str], list[str]]:
    """(failures, warnings), each a short phrase for the verdict or the report."""
    failures: list[str] = []
    warnings: list[str] = []
    if wanted.fail_unused:
        unused = merged.get("unused")
        if unused is None:
            failures.append("unused entries unknown: no proxy of the run ended cleanly")
        elif unused.get("count"):
            n = unused["count"]
            failures.append(f"{n} unused entr{'y' if n == 1 else 'ies'} (--fail-unused)")
    oldest = merged.get("oldest_used")
    for limit, into, flag in (
        (wanted.max_age, failures, "--max-age"),
        (wanted.warn_age, warnings, "--warn-age"),
    ):
        if limit is None or oldest is None:
            continue
        age = now - oldest["recorded_at"]
        if age > limit:
            key = str(oldest.get("key", ""))[:16]
            into.append(
                f"a recording used is {age_text(age)} old, over {flag} {age_text(limit)}"
                f" (key {key})"
            )
    return failures, warnings


def age_text(seconds: float) -> str:
    """`3d`, `5h`, `12m`, `40s`: the largest unit that fits."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def render_text(merged: dict, verdict: str) -> str:
    lines = [
        f"provider-cache: {verdict}",
        f"mode {merged['mode']}: {merged['hits']} hits, {merged['misses']} misses, "
        f"{merged['recorded']} recorded, {merged['passthrough']} passthrough, "
        f"{merged['errors']} errors",
    ]
    rejected = merged.get("rejected", {})
    if any(rejected.values()):
        lines.append(f"not stored: {sum(rejected.values())} ({by_reason(rejected)})")
    for host, c in merged["by_host"].items():
        line = f"  {host}: {c['hits']} hits, {c['misses']} misses ({percent(c['hit_rate'])})"
        if any(c.get("rejected", {}).values()):
            line += f"; not stored: {by_reason(c['rejected'])}"
        lines.append(line)
    if "remote" in merged:
        lines += _remote_lines(merged)
    if merged["missed"]:
        lines.append(f"missed requests ({len(merged['missed'])}):")
        for m in merged["missed"]:
            lines.append(f"  {m['count']}x {m['method']} {m['url']}  key {m['key'][:16]}")
            if m.get("tests"):
                lines.append(f"      sent by {', '.join(m['tests'])}")
            lines += [f"      {line}" for line in explain(m)]
    if merged["missed_dropped"]:
        lines.append(f"  … and {merged['missed_dropped']} more misses of requests not listed")
    missing = tests_that_missed(merged)
    if missing:
        lines.append(f"tests that missed ({len(missing)}):")
        lines += [f"  {test}" for test in missing]
    lines += _unused_lines(merged)
    return "\n".join(lines)


#: Unused keys a report names.
SHOWN_UNUSED = 20


def _unused_lines(merged: dict) -> list[str]:
    unused = merged.get("unused") or {}
    count = unused.get("count", 0)
    if not count:
        return []
    keys = unused.get("keys", [])[:SHOWN_UNUSED]
    more = f" (+{count - len(keys)} more)" if count > len(keys) else ""
    return [
        f"unused entries ({count}): no request of this run used them",
        *(f"  {key[:16]}" for key in keys),
    ] + ([f"  …{more}"] if more else [])


def by_reason(rejected: dict[str, int]) -> str:
    """'2 cut_short, 1 stream_error': the reasons that happened, in the counts' order."""
    return ", ".join(f"{count} {reason}" for reason, count in rejected.items() if count)


#: Keys of failed or conflicting uploads the text report names, per list.
SHOWN_REMOTE_KEYS = 10


def remote_summary(merged: dict) -> str:
    """One line of the remote tier: its hits, lookups that missed or failed, and uploads."""
    r, hits = merged["remote"], merged.get("tiers", {}).get("remote", 0)
    return (
        f"remote {r.get('location', '?')}: {hits} hits, {r.get('misses', 0)} misses, "
        f"{r.get('errors', 0)} errors, {r.get('skipped', 0)} not asked; "
        f"{r.get('uploaded', 0)} uploaded, {r.get('pending', 0)} pending, "
        f"{r.get('failed', 0)} failed, {r.get('conflicts', 0)} conflicts"
    )


def _remote_lines(merged: dict) -> list[str]:
    lines = [remote_summary(merged)]
    remote = merged["remote"]
    for name, said in (("failed_keys", "not uploaded"), ("conflict_keys", "already there")):
        keys = remote.get(name, [])
        if keys:
            shown = ", ".join(key[:16] for key in keys[:SHOWN_REMOTE_KEYS])
            more = (
                f" (+{len(keys) - SHOWN_REMOTE_KEYS} more)" if len(keys) > SHOWN_REMOTE_KEYS else ""
            )
            lines.append(f"  {said}: {shown}{more}")
    return lines


def explain(missed: dict) -> list[str]:
    """What differs from the closest recording, or the request body when nothing is close."""
    closest = missed.get("closest")
    if closest:
        more = f" (+{closest['more']} more)" if closest.get("more") else ""
        lines = [f"closest recording {closest['key'][:16]} differs in:{more}"]
        return lines + [f"  {d}" for d in closest["differences"]]
    request = missed.get("request", {})
    body = request.get("body", "")
    lines = ["no recording of the same method, host and path"]
    lines += [f"rule applied: {rule}" for rule in request.get("rules", []) if isinstance(rule, str)]
    return lines + ([f"body: {body[:200]}"] if body else [])


def render_markdown(merged: dict, verdict: str, passed: bool) -> str:
    icon = "✅" if passed else "❌"
    lines = [
        f"### {icon} provider-cache: {verdict}",
        "",
        "| mode | hits | misses | hit rate | recorded | passthrough | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| {merged['mode']} | {merged['hits']} | {merged['misses']} | "
        f"{percent(merged['hit_rate'])} | {merged['recorded']} | {merged['passthrough']} | "
        f"{merged['errors']} |",
    ]
    if "remote" in merged:
        lines += ["", _md(remote_summary(merged))]
    lines += _rejected_table(merged)
    if merged["missed"]:
        lines += ["", "**Missed requests** (re-record them; see the README):", ""]
        lines += ["| count | request | key | why it missed |", "|---:|---|---|---|"]
        for m in merged["missed"]:
            why = "<br>".join(_md(line.strip()) for line in explain(m))
            # In a code span only the pipe needs escaping: GitHub splits cells on it first.
            request = f"{m['method']} {m['url']}".replace("|", "\\|")
            if m.get("tests"):
                why = f"sent by {_md(', '.join(m['tests']))}<br>{why}"
            lines.append(f"| {m['count']} | `{request}` | `{m['key'][:16]}` | {why} |")
    missing = tests_that_missed(merged)
    if missing:
        lines += ["", f"**Tests that missed** ({len(missing)}):", ""]
        lines += [f"- `{test.replace('`', '')}`" for test in missing]
    unused = _unused_lines(merged)
    if unused:
        lines += ["", f"**{unused[0]}**", ""] + [f"- `{line.strip()}`" for line in unused[1:]]
    return "\n".join(lines) + "\n"


def _rejected_table(merged: dict) -> list[str]:
    """The answers not stored, by host and reason; nothing when every answer was stored."""
    rows = [
        f"| {_md(host)} | {reason} | {count} | {_md(EXPLAINED.get(reason, ''))} |"
        for host, c in merged["by_host"].items()
        for reason, count in c.get("rejected", {}).items()
        if count
    ]
    rejected = merged.get("rejected", {})
    if not rows and not any(rejected.values()):
        return []
    total = sum(rejected.values())
    return [
        "",
        f"**Answers not stored** ({total}: {by_reason(rejected)}):",
        "",
        "| host | reason | count | why |",
        "|---|---|---:|---|",
        *rows,
    ]


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;")
