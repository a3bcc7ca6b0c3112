"""Reading, summing and judging stats documents (SPEC §7): the logic behind the CI gate.

Pure: takes parsed JSON, returns dicts and text. Several documents are shards of
one CI run and are summed; the gate passes when the summed hit rate reaches the
threshold (a run with no provider lookups has nothing stale and passes).
"""

from __future__ import annotations

from provider_cache.core.stats import HOST_TOTALS, SCHEMA, TOTALS, rate


class BadStats(ValueError):
    """A document that is not a provider-cache stats file of a known schema."""


def validate(doc: object, source: str) -> dict:
    if not isinstance(doc, dict) or "hits" not in doc or "misses" not in doc:
        raise BadStats(f"{source}: not a provider-cache stats file")
    if doc.get("schema") != SCHEMA:
        raise BadStats(f"{source}: unknown stats schema {doc.get('schema')!r} (expected {SCHEMA})")
    for name in TOTALS:
        value = doc.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadStats(f"{source}: field {name!r} is not a count")
    return doc


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
    by_host: dict[str, dict] = {}
    for doc in docs:
        for host, counts in doc.get("by_host", {}).items():
            into = by_host.setdefault(host, dict.fromkeys(HOST_TOTALS, 0))
            for name in HOST_TOTALS:
                into[name] += counts.get(name, 0)
    for counts in by_host.values():
        counts["hit_rate"] = rate(counts["hits"], counts["misses"])
    merged["by_host"] = dict(sorted(by_host.items()))
    missed: dict[str, dict] = {}
    for doc in docs:
        for item in doc.get("missed", []):
            if item["key"] in missed:
                missed[item["key"]]["count"] += item["count"]
            else:
                missed[item["key"]] = dict(item)
    merged["missed"] = list(missed.values())
    merged["missed_dropped"] = sum(d.get("missed_dropped", 0) for d in docs)
    return merged


def gate(merged: dict, min_hit_rate: float | None) -> tuple[bool, str]:
    """(passed, one-line verdict)."""
    hit_rate = merged["hit_rate"]
    lookups = merged["hits"] + merged["misses"]
    if min_hit_rate is None:
        return True, f"hit rate {percent(hit_rate)} ({lookups} lookups); no threshold set"
    if hit_rate is None:
        return True, "no provider lookups were made: nothing is stale"
    verdict = "meets" if hit_rate >= min_hit_rate else "is below"
    return hit_rate >= min_hit_rate, (
        f"hit rate {percent(hit_rate)} {verdict} the threshold {percent(min_hit_rate)}"
        f" ({merged['hits']} hits, {merged['misses']} misses)"
    )


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def render_text(merged: dict, verdict: str) -> str:
    lines = [
        f"provider-cache: {verdict}",
        f"mode {merged['mode']}: {merged['hits']} hits, {merged['misses']} misses, "
        f"{merged['recorded']} recorded, {merged['passthrough']} passthrough, "
        f"{merged['errors']} errors",
    ]
    for host, c in merged["by_host"].items():
        lines.append(f"  {host}: {c['hits']} hits, {c['misses']} misses ({percent(c['hit_rate'])})")
    if merged["missed"]:
        lines.append(f"missed requests ({len(merged['missed'])}):")
        for m in merged["missed"]:
            lines.append(f"  {m['count']}x {m['method']} {m['url']}  key {m['key'][:16]}")
            lines += [f"      {line}" for line in explain(m)]
    if merged["missed_dropped"]:
        lines.append(f"  … and {merged['missed_dropped']} more misses of requests not listed")
    return "\n".join(lines)


def explain(missed: dict) -> list[str]:
    """What differs from the closest recording, or the request body when nothing is close."""
    closest = missed.get("closest")
    if closest:
        more = f" (+{closest['more']} more)" if closest.get("more") else ""
        lines = [f"closest recording {closest['key'][:16]} differs in:{more}"]
        return lines + [f"  {d}" for d in closest["differences"]]
    body = missed.get("request", {}).get("body", "")
    lines = ["no recording of the same method, host and path"]
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
    if merged["missed"]:
        lines += ["", "**Missed requests** (re-record them; see the README):", ""]
        lines += ["| count | request | key | why it missed |", "|---:|---|---|---|"]
        for m in merged["missed"]:
            why = "<br>".join(_md(line.strip()) for line in explain(m))
            # In a code span only the pipe needs escaping: GitHub splits cells on it first.
            request = f"{m['method']} {m['url']}".replace("|", "\\|")
            lines.append(f"| {m['count']} | `{request}` | `{m['key'][:16]}` | {why} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;")
