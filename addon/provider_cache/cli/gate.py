"""`provider-cache stats` (scripts/cache_stats.py): load stats from files or a running proxy,
sum them, judge them, print them."""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from provider_cache.cli.args import BAD_INPUT, BELOW_THRESHOLD, OK, Fail
from provider_cache.core import report
from provider_cache.core.names import ENDPOINT_STATS_URL
from provider_cache.storage.cachedir import DEFAULT_CACHE_DIR, STATS_FILE

DEFAULT_FILE = Path(DEFAULT_CACHE_DIR) / STATS_FILE


def load_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise Fail(f"stats file not found: {path}", BAD_INPUT) from None
    except (OSError, UnicodeDecodeError) as e:
        raise Fail(f"cannot read stats file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return report.validate(json.loads(text), str(path))
    except json.JSONDecodeError as e:
        raise Fail(f"{path}: not valid JSON (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise Fail(f"{path}: not valid JSON (nested too deeply)") from None
    except report.BadStats as e:
        raise Fail(str(e)) from None


def load_url(url: str) -> dict:
    """`http://host:port` is a proxy to ask for the endpoint; a URL ending in /stats is fetched."""
    if url.rstrip("/").endswith("/stats"):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        target = url
    else:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": url}))
        target = ENDPOINT_STATS_URL
    try:
        with opener.open(target, timeout=10) as response:
            return report.validate(json.loads(response.read()), url)
    except RecursionError:
        raise Fail(f"cannot read stats from {url}: JSON nested too deeply") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise Fail(f"cannot read stats from {url}: {reason}") from None


def load(args: argparse.Namespace) -> dict:
    docs = [load_file(Path(f)) for f in args.files]
    if args.url:
        docs.append(load_url(args.url))
    if not docs:
        docs.append(load_file(DEFAULT_FILE))
    return report.merge(docs)


def judge(
    merged: dict,
    min_hit_rate: float | None,
    fmt: str,
    min_lookups: int = 0,
    wanted: report.Freshness | None = None,
) -> tuple[int, str]:
    passed, verdict = report.gate(merged, min_hit_rate, min_lookups)
    failures, warnings = report.freshness(merged, wanted or report.Freshness(), time.time())
    if failures:
        passed, verdict = False, "; ".join([verdict, *failures])
    if fmt == "json":
        thresholds = {"min_hit_rate": min_hit_rate, "min_lookups": min_lookups}
        gate_doc = {"passed": passed, **thresholds, "verdict": verdict, "warnings": warnings}
        out = json.dumps({**merged, "gate": gate_doc}, indent=2)
    elif fmt == "markdown":
        out = report.render_markdown(merged, verdict, passed)
        out += "".join(f"\n> ⚠️ {w}\n" for w in warnings)
    else:
        out = report.render_text(merged, verdict)
        out += "".join(f"\nwarning: {w}" for w in warnings)
    return (OK if passed else BELOW_THRESHOLD), out


def wanted_of(args: argparse.Namespace) -> report.Freshness:
    return report.Freshness(
        fail_unused=getattr(args, "fail_unused", False),
        max_age=getattr(args, "max_age", None),
        warn_age=getattr(args, "warn_age", None),
    )


def main(args: argparse.Namespace) -> int:
    code, out = judge(load(args), args.min_hit_rate, args.format, args.min_lookups, wanted_of(args))
    print(out)
    return code
