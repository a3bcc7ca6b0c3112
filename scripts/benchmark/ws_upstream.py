"""The test suite's fake WebSocket provider as the bench's upstream for the websocket
section: `python scripts/benchmark/ws_upstream.py DIR` prints its port, serves until killed.

tests/support/fake_ws.py speaks OpenAI Realtime as the tests' clients see it. It runs in
its own process, so its threads share neither the bench client's GIL nor the proxy's CPU
count; the proxies run with ssl_insecure, so its throwaway CA needs no trust.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout, for tests.support

from tests.support.fake_ws import FakeWebSocketProvider  # noqa: E402


def serve(directory: Path) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeWebSocketProvider(directory) as provider:
        print(provider.port, flush=True)
        while not stop.wait(1.0):
            with provider._lock:  # nothing reads them: keep a long run's memory flat
                provider.handshakes.clear()
        if provider.errors:
            sys.exit(f"ws_upstream: {provider.errors[:3]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: ws_upstream.py DIR")
    serve(Path(sys.argv[1]))
