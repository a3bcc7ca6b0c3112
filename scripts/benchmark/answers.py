"""What a measurement window must have seen to count: every answer the expected one."""

from __future__ import annotations

from collections.abc import Callable

from benchmark.net import Window
from benchmark.proxy import Proxy


def const(body: bytes) -> Callable[[], bytes]:
    return lambda: body


def assert_ok(proxy: Proxy, w: Window, size: int | None, cache: str) -> None:
    """A window counts only if every answer was the expected one (and a hit where one is
    due); `size` None: any non-empty body (answers that number themselves vary in length)."""
    problems = []
    if set(w.statuses) != {200}:
        problems.append(f"statuses {dict(w.statuses)}")
    if size is not None and set(w.sizes) != {size}:
        problems.append(f"body sizes {dict(w.sizes)}, expected {size}")
    if size is None and 0 in w.sizes:
        problems.append(f"{w.sizes[0]} empty bodies")
    if set(w.cache) != {cache}:
        problems.append(f"x-provider-cache {dict(w.cache)}, expected {cache!r}")
    if not w.requests:
        problems.append("no request completed")
    if problems:
        raise SystemExit(f"bench: {proxy.name}: {'; '.join(problems)}\n{proxy.log_tail()}")
