"""The live endpoint on http://provider-cache.internal (SPEC §6), as an ASGI app.

mitmproxy's own ASGIApp addon serves it through the proxy, the way mitm.it is
served. Read-only: GET and HEAD of /stats (the stats file's JSON) and /metrics
(Prometheus text format, rendered by prometheus_client).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterator

from mitmproxy import http
from mitmproxy.addons.asgiapp import ASGIApp, serve
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from provider_cache.core.names import ENDPOINT_HOST as HOST
from provider_cache.core.rejections import REASONS
from provider_cache.core.stats import HOST_TOTALS, REMOTE_TOTALS, TOTALS

_HOST_BYTES = HOST.encode()

Snapshot = Callable[[], dict]


class StatsCollector:
    """Prometheus metrics computed from a stats snapshot at scrape time."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self.snapshot()
        for name in TOTALS:
            yield CounterMetricFamily(
                f"provider_cache_{name}", f"Provider requests counted as {name}", stats[name]
            )
        yield _gauge("provider_cache_hit_rate", "hits / (hits + misses)", stats["hit_rate"])
        yield _gauge(
            "provider_cache_window_hit_rate",
            f"hit rate over the last {stats['window']['size']} lookups",
            stats["window"]["hit_rate"],
        )
        for name in HOST_TOTALS:
            family = CounterMetricFamily(
                f"provider_cache_host_{name}",
                f"Provider requests counted as {name}, by host",
                labels=["host"],
            )
            for host, counts in stats["by_host"].items():
                family.add_metric([host], counts[name])
            yield family
        yield _rejected(stats)
        if "remote" in stats:
            yield from _remote_metrics(stats)


def _rejected(stats: dict) -> Metric:
    """Answers not stored (SPEC §4), by host and reason: every reason of every host, so a
    counter exists (at 0) before its first increment and rate() sees that one."""
    family = CounterMetricFamily(
        "provider_cache_rejected",
        "Answers to cached requests not stored, by host and reason",
        labels=["host", "reason"],
    )
    for host, counts in stats["by_host"].items():
        rejected = counts.get("rejected", {})
        for reason in REASONS:
            family.add_metric([host, reason], rejected.get(reason, 0))
    return family


_REMOTE_HELP = {
    "misses": "Keys asked of the remote tier that it does not have",
    "errors": "Remote lookups that failed or found a corrupt object, and a failed probe",
    "skipped": "Local misses not asked of the remote (unavailable, or paused after failures)",
    "uploaded": "Recorded entries the remote holds (written, or already there the same)",
    "pending": "Recorded entries waiting for their upload",
    "failed": "Uploads given up: the entries stay in the local store",
    "conflicts": "Uploads whose key the remote holds with another answer (never replaced)",
}


def _remote_metrics(stats: dict) -> Iterator[Metric]:
    """With a remote tier (SPEC §11): hits by tier, and the remote's lookups and uploads."""
    tiers = CounterMetricFamily(
        "provider_cache_tier_hits", "Hits by the tier that served them", labels=["tier"]
    )
    for tier, hits in stats["tiers"].items():
        tiers.add_metric([tier], hits)
    yield tiers
    for name in REMOTE_TOTALS:
        metric = GaugeMetricFamily if name == "pending" else CounterMetricFamily
        yield metric(f"provider_cache_remote_{name}", _REMOTE_HELP[name], stats["remote"][name])


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, math.nan if value is None else value)


class EndpointApp:
    """A dependency-free ASGI app: two read-only routes and a short index."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(snapshot))

    async def __call__(
        self,
        scope: dict,
        receive: Callable[[], Awaitable[dict]],
        send: Callable[[dict], Awaitable[None]],
    ) -> None:
        status, content_type, body = self.route(scope["method"], scope["path"])
        headers = [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"provider-cache endpoint is read-only\n"
        if path == "/stats":
            return 200, "application/json", json.dumps(self.snapshot(), indent=2).encode()
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        if path == "/":
            return 200, "text/plain", b"provider-cache: /stats (JSON), /metrics (Prometheus)\n"
        return 404, "text/plain", b"not found: try /stats or /metrics\n"


def is_endpoint(request: http.Request) -> bool:
    """Whether a request is for the endpoint, as ASGIApp decides it (by `pretty_host`).

    `pretty_host` parses the Host header (with IDNA) on every request; looking for the
    name in the raw request first spares the provider requests that work.
    """
    data = request.data
    if (
        data.host != HOST
        and _HOST_BYTES not in data.authority
        and not any(_HOST_BYTES in value for _, value in data.headers.fields)
    ):
        return False
    return request.pretty_host == HOST


class Endpoint(ASGIApp):
    """mitmproxy's ASGIApp for the endpoint, with a cheap `request` hook for other flows.

    ASGIApp's own hook is a coroutine function, so every request through the proxy would
    pay for a coroutine; this one is synchronous and hands mitmproxy the app's coroutine
    (which it awaits) only for the endpoint's own requests.
    """

    def __init__(self, snapshot: Snapshot):
        super().__init__(EndpointApp(snapshot), HOST, None)

    def should_serve(self, flow: http.HTTPFlow) -> bool:
        # Cheapest test first: a cache hit already has its answer.
        return flow.response is None and is_endpoint(flow.request) and super().should_serve(flow)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:  # type: ignore[override]
        return serve(self.asgi_app, flow) if self.should_serve(flow) else None
