"""The endpoint addon decides which requests are its own as mitmproxy's ASGIApp does."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.test import taddons, tflow

from provider_cache.mitm import endpoint


def endpoint_request(host: str, host_header: str | None = None):
    request = tflow.treq(host=host, port=80, path=b"/stats")
    request.headers.pop("host", None)
    if host_header is not None:
        request.headers["host"] = host_header
    return request


@pytest.mark.parametrize(
    ("host", "host_header", "expected"),
    [
        ("provider-cache.internal", None, True),  # regular proxy, absolute form
        ("provider-cache.internal", "provider-cache.internal", True),
        ("127.0.0.1", "provider-cache.internal:8080", True),  # transparent: by Host header
        ("127.0.0.1", "PROVIDER-CACHE.INTERNAL", False),  # as ASGIApp: case matters
        ("api.openai.com", "api.openai.com", False),
        ("provider-cache.internal.evil.example", None, False),
        ("api.openai.com", "provider-cache.internal.evil.example", False),
    ],
)
def test_is_endpoint_agrees_with_pretty_host(host, host_header, expected):
    request = endpoint_request(host, host_header)
    assert endpoint.is_endpoint(request) is expected
    assert (request.pretty_host == endpoint.HOST) is expected


def test_other_requests_cost_no_coroutine_and_own_ones_are_served():
    addon = endpoint.Endpoint(lambda: {"hits": 0})
    with taddons.context(addon):
        assert addon.request(tflow.tflow()) is None
        flow = tflow.tflow(req=endpoint_request("provider-cache.internal"))
        flow.request.path = "/"
        asyncio.run(addon.request(flow))
        assert flow.response.status_code == 200
        assert b"/stats" in flow.response.content


def test_metrics_gain_the_tier_and_remote_counters_only_with_a_remote():
    from prometheus_client.parser import text_string_to_metric_families

    from provider_cache.core.stats import REMOTE_TOTALS, RemoteCounts, Stats

    stats = Stats(mode="replay", window_size=10, remote=RemoteCounts("s3://b-1/p", pending=2))
    stats.hit("api.openai.com")
    stats.from_remote()
    status, _, body = endpoint.EndpointApp(stats.snapshot).route("GET", "/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert status == 200
    assert samples[("provider_cache_tier_hits_total", (("tier", "local"),))] == 0
    assert samples[("provider_cache_tier_hits_total", (("tier", "remote"),))] == 1
    assert samples[("provider_cache_remote_pending", ())] == 2
    for name in REMOTE_TOTALS:
        if name != "pending":
            assert (f"provider_cache_remote_{name}_total", ()) in samples
    plain = Stats(mode="replay", window_size=10)
    _, _, body = endpoint.EndpointApp(plain.snapshot).route("GET", "/metrics")
    assert b"provider_cache_remote" not in body and b"tier_hits" not in body


def metric_samples(snapshot) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = endpoint.EndpointApp(snapshot).route("GET", "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_count_answers_not_stored_by_host_and_reason():
    from provider_cache.core.rejections import CUT_SHORT, REASONS, STREAM_ERROR
    from provider_cache.core.stats import Stats

    stats = Stats(mode="record", window_size=10)
    stats.reject("api.openai.com", CUT_SHORT)
    stats.reject("api.openai.com", CUT_SHORT)
    stats.reject("bedrock-runtime.us-east-1.amazonaws.com", STREAM_ERROR)
    stats.hit("api.anthropic.com")
    samples = metric_samples(stats.snapshot)
    rejected = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "provider_cache_rejected_total"
    }
    openai = (("host", "api.openai.com"), ("reason", CUT_SHORT))
    bedrock = (("host", "bedrock-runtime.us-east-1.amazonaws.com"), ("reason", STREAM_ERROR))
    assert rejected[openai] == 2 and rejected[bedrock] == 1
    # every reason of every host, at 0 before its first increment
    assert len(rejected) == 3 * len(REASONS)
    assert rejected[(("host", "api.anthropic.com"), ("reason", CUT_SHORT))] == 0
    assert sum(rejected.values()) == 3


def test_metrics_of_a_snapshot_without_rejections_still_render():
    """A snapshot of an older shape (no `rejected` per host) gives zeros, not a failed scrape."""
    document = {
        "hits": 1,
        "misses": 0,
        "recorded": 0,
        "passthrough": 0,
        "errors": 0,
        "hit_rate": 1.0,
        "window": {"size": 1, "hit_rate": 1.0},
        "by_host": {"h": {"hits": 1, "misses": 0, "recorded": 0, "errors": 0}},
    }
    samples = metric_samples(lambda: document)
    assert samples[("provider_cache_rejected_total", (("host", "h"), ("reason", "cut_short")))] == 0
