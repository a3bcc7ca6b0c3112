"""The test suite's fake provider as the bench's upstream for the other wire formats:
`python scripts/benchmark/fake_upstream.py DIR DELAY` prints its port, serves until killed.

scripts/benchmark/upstream.py is the cheap upstream of the hit and record paths and speaks
OpenAI chat only; the stream sections need Bedrock event streams, NDJSON and Gemini's JSON
array as the tests' SDKs see them, which tests/support/fake_provider.py already speaks
(every event its own HTTP chunk, `DELAY` seconds apart). It runs in its own process, so its
threads share neither the load client's GIL nor the proxy's CPU count; the proxies run with
ssl_insecure, so its throwaway CA needs no trust.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout, for tests.support

from tests.support.fake_provider import FakeProvider  # noqa: E402


def serve(directory: Path, delay: float) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeProvider(directory) as provider:
        provider.chunk_delay = delay
        print(provider.port, flush=True)
        while not stop.wait(1.0):
            with provider._lock:  # nothing reads them: keep a long run's memory flat
                provider.requests.clear()
                provider.streamed.clear()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: fake_upstream.py DIR DELAY_SECONDS")
    serve(Path(sys.argv[1]), float(sys.argv[2]))
