"""Names the outside world sees, each defined once (SPEC §2, §6, §8)."""

#: The cache modes (SPEC §2), in the order the help lists them.
MODES = ("record", "replay", "refresh", "read-old-write-new")
DEFAULT_MODE = "record"

#: The response header that says hit or miss; never stored, never part of a key.
CACHE_HEADER = "x-provider-cache"

#: The reserved host of the live endpoint, served through the proxy (SPEC §6).
ENDPOINT_HOST = "provider-cache.internal"
ENDPOINT_STATS_URL = f"http://{ENDPOINT_HOST}/stats"

#: Where the cache keeps what it decided about a flow, in `flow.metadata` (mitmweb, flow files).
FLOW_METADATA_KEY = "provider_cache"

#: The test runner's channel (SPEC §12): the pytest plugin tells the proxy it started which
#: test is running, by POSTing JSON to this path of the endpoint with the token it gave the
#: proxy (in the proxy's environment only, never on a command line) in the header below.
ENDPOINT_TEST_URL = f"http://{ENDPOINT_HOST}/test"
CONTROL_HEADER = "x-provider-cache-control"
CONTROL_TOKEN_ENV = "PROVIDER_CACHE_CONTROL_TOKEN"
#: The loopback port where the proxy also takes those messages as JSON lines, each with the
#: token: a round trip of a fraction of a millisecond, as each test sends one.
CONTROL_PORT_ENV = "PROVIDER_CACHE_CONTROL_PORT"
