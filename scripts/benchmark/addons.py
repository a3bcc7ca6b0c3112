"""mitmproxy scripts for the benchmark's reference points: `-s scripts/benchmark/addons.py`.

`--set bench_role=ceiling`: answer every request from memory with the same response the
cache replays (JSON, or the SSE body for a streaming request), built the cheapest way
mitmproxy allows. No mitmproxy-based hit path can cost less than this.

`--set bench_role=stream`: plain passthrough that streams every response body to the
client as it arrives (stock mitmdump buffers it), the fair reference for the record path.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scripts/, for `benchmark`
# mitmdump loads this file as a script, not as part of the scripts package.
from benchmark.net import (
    JSON_HEADERS,
    SSE_HEADERS,
    is_stream_request,
    json_response,
    sse_chunks,
)

ROLES = ("ceiling", "stream")


def _fixed(headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> tuple:
    return (*headers, (b"content-length", str(len(body)).encode())), body


class BenchReference:
    def __init__(self) -> None:
        self.role = "ceiling"
        self.json = _fixed(JSON_HEADERS, json_response())
        self.sse = _fixed(SSE_HEADERS, b"".join(sse_chunks()))

    def load(self, loader: Loader) -> None:
        loader.add_option("bench_role", str, "ceiling", "ceiling | stream")

    def configure(self, updated: set[str]) -> None:
        if "bench_role" in updated:
            if ctx.options.bench_role not in ROLES:
                raise exceptions.OptionsError(f"bench_role must be one of {', '.join(ROLES)}")
            self.role = ctx.options.bench_role

    def request(self, flow: http.HTTPFlow) -> None:
        if self.role != "ceiling" or flow.response:
            return
        headers, body = (
            self.sse if is_stream_request(flow.request.raw_content or b"") else self.json
        )
        now = time.time()
        flow.response = http.Response(
            flow.request.http_version.encode(), 200, b"OK", headers, body, None, now, now
        )
        flow.is_replay = "response"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if self.role == "stream" and flow.response is not None:
            flow.response.stream = True


addons = [BenchReference()]
