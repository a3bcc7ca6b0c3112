"""Load windows through the proxy: many HTTP/1.1 connections, or one HTTP/2 connection
with as many streams at a time (net.py holds the HTTP/1.1 client, http2.py the HTTP/2 one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from benchmark.http2 import H2Connection
from benchmark.net import Connection, Target, Window, client_context


async def run_window(
    target: Target,
    body: Callable[[], bytes],
    concurrency: int,
    duration: float,
    proxy_cpu: Callable[[], float],
    warmup: int = 3,
    http2: bool = False,
    total: int | None = None,
) -> Window:
    """Open `concurrency` connections (or one HTTP/2 connection with as many streams at a
    time), warm them up, then send requests for `duration` s, or `total` requests (then
    `duration` only bounds the window: requests that are each answered once, such as a
    remote hit, are counted out, not timed out).

    The proxy's CPU time is read after the warm-up (TLS handshakes, certificate
    generation) and after the last request of the window, so it covers the requests only.
    """
    conns: Sequence[Connection | H2Connection]
    if http2:
        context = client_context(target.ca, ["h2", "http/1.1"])
        conns = [await H2Connection(target, context).open()] * concurrency
    else:
        context = client_context(target.ca)
        opening = (Connection(target, context).open() for _ in range(concurrency))
        conns = await asyncio.gather(*opening)
    window = Window()
    try:
        await asyncio.gather(*(_repeat(c, body, warmup, None, Window()) for c in conns))
        cpu0, own0, t0 = proxy_cpu(), time.process_time(), time.perf_counter()
        deadline = t0 + duration
        budget = None if total is None else [total]
        await asyncio.gather(*(_repeat(c, body, None, deadline, window, budget) for c in conns))
        window.elapsed = time.perf_counter() - t0
        window.proxy_cpu = proxy_cpu() - cpu0
        window.client_cpu = time.process_time() - own0
    finally:
        for conn in set(conns):
            conn.close()
    return window


async def _repeat(
    conn: Connection | H2Connection,
    body: Callable[[], bytes],
    count: int | None,
    deadline: float | None,
    window: Window,
    budget: list[int] | None = None,
) -> None:
    """Requests on one connection until `count` are done, the deadline passes or the
    shared `budget` (requests left for all connections) is spent."""
    done = 0
    while (count is None or done < count) and (deadline is None or time.perf_counter() < deadline):
        if budget is not None:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        result = await conn.request(body())
        done += 1
        window.requests += 1
        window.latencies.append(result.latency)
        window.ttfbs.append(result.ttfb)
        window.statuses[result.status] += 1
        window.cache[result.cache] += 1
        window.sizes[result.size] += 1
