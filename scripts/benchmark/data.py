"""The benchmark's recordings: cache entries written straight into LMDB, and the same entries
as a mitmproxy flow file for `--server-replay`; plus the in-process cost of one hit.

Entries are built with the addon's own modules (keys, records, store, flowfile), so the
key is exactly the one the proxy computes for the load client's requests.
"""

from __future__ import annotations

import itertools
import shutil
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.net import (
    CLIENT_HEADERS,
    JSON_HEADERS,
    PATH,
    SSE_HEADERS,
    json_response,
    request_body,
    sse_chunks,
)
from provider_cache.core import keys, records, redact
from provider_cache.core.recent import KEY_SLOTS
from provider_cache.mitm import flowfile
from provider_cache.storage.store import Store

if TYPE_CHECKING:
    from mitmproxy import http

RULES = keys.KeyRules.with_extra()
#: Request numbers of the "distinct requests" load: more than the proxy remembers keys for
#: (addon/recent.py), so that sent round-robin, no request is ever found there.
DISTINCT = range(1, KEY_SLOTS + 500)
#: Size of the filler entries for the start-up runs: a short chat exchange.
BULK_REQUEST, BULK_RESPONSE = 1024, 2048


def request_parts(body: bytes, host: str, port: int) -> keys.RequestParts:
    """The request as mitmproxy hands it to the addon (see flows.request_parts)."""
    authority = host if port == 443 else f"{host}:{port}"
    headers = (("host", authority), *CLIENT_HEADERS, ("content-length", str(len(body))))
    return keys.RequestParts("POST", "https", host, port, PATH, "", headers, body)


def mitmproxy_request(parts: keys.RequestParts) -> http.Request:
    """The same request as the mitmproxy object the addon's hooks receive."""
    from mitmproxy import http

    headers = tuple((k.encode(), v.encode()) for k, v in parts.headers)
    return http.Request(
        parts.host,
        parts.port,
        b"POST",
        b"https",
        parts.host.encode(),
        parts.path.encode(),
        b"HTTP/1.1",
        headers,
        parts.body,
        None,
        0.0,
        0.0,
    )


def entry(
    body: bytes, stream: bool, host: str, port: int, response_size: int | None = None
) -> records.Entry:
    parts = request_parts(body, host, port)
    key, _ = keys.key_for(parts, RULES)
    raw_headers = [(k.encode(), v.encode()) for k, v in parts.headers]
    authority = host if port == 443 else f"{host}:{port}"
    request = records.StoredRequest(
        "POST", f"https://{authority}{PATH}", redact.redact_headers(raw_headers, RULES), body
    )
    if stream:
        response = records.StoredResponse(
            200, "OK", records.storable_headers(list(SSE_HEADERS)), chunks=sse_chunks()
        )
    else:
        content = json_response(response_size) if response_size else json_response()
        response = records.StoredResponse(
            200, "OK", records.storable_headers(list(JSON_HEADERS)), body=content
        )
    return records.Entry(key, time.time() - 3600, request, response, {"recorded_run": 1})


def hit_entries(host: str, port: int) -> list[records.Entry]:
    """The two entries the hit-path load asks for: a JSON answer and an SSE stream."""
    return [
        entry(request_body(False), False, host, port),
        entry(request_body(True), True, host, port),
    ]


def distinct_entries(host: str) -> list[records.Entry]:
    """JSON entries for the DISTINCT requests: what a first run of a test suite asks."""
    return [entry(request_body(False, n), False, host, 443) for n in DISTINCT]


def write_store(directory: Path, entries: list[records.Entry]) -> None:
    with Store(directory) as store:
        store.put_many([(e.key.encode(), records.pack(e)) for e in entries])


def write_flow_file(path: Path, entries: list[records.Entry]) -> None:
    """The same recordings as a flow file that `mitmdump --server-replay` loads."""
    flowfile.write_flows(entries, path)


def hit_cost(directory: Path, repeat: int = 7, number: int = 2000) -> dict[str, float]:
    """Microseconds per hit in process, JSON entry: key, lookup, decode, and all three (plus
    building the response object, which a ceiling addon pays as well); best of `repeat`."""
    from provider_cache.core.recent import LRU, RecentEntries
    from provider_cache.mitm import flows

    with Store(directory) as store:
        parts = request_parts(request_body(False), "api.openai.com", 443)
        key = keys.key_for(parts, RULES)[0].encode()
        data = store.get(key)
        assert data is not None, "the JSON hit entry is missing"
        found = records.unpack(data)
        request = mitmproxy_request(parts)
        known_keys: LRU[str] = LRU(16)
        known_keys.put(flows.fingerprint(request, RULES), key.decode())
        decoded: RecentEntries[records.Entry] = RecentEntries()

        def seen_before() -> records.Entry:
            """A request seen before, as ProviderCache looks it up (addon/recent.py)."""
            known = known_keys.get(flows.fingerprint(request, RULES))
            assert known is not None  # put above; the hit path checks it too (Keyer.key)
            stored = store.get(known.encode())
            assert stored is not None  # as ProviderCache._lookup checks it
            return decoded.decoded(known, stored, records.unpack)

        def hit() -> records.Entry:
            stored = store.get(keys.key_for(parts, RULES)[0].encode())
            assert stored is not None  # as ProviderCache._lookup checks it
            return records.unpack(stored)

        steps = {
            "key_us": lambda: keys.key_for(parts, RULES),
            "lookup_us": lambda: store.get(key),
            "decode_us": lambda: records.unpack(data),
            "hit_us": hit,
            "repeat_us": seen_before,
            "response_us": lambda: flows.replay_response(flows.Replay.of(found), "HTTP/1.1"),
        }
        return {
            name: 1e6 * min(timeit.repeat(step, repeat=repeat, number=number)) / number
            for name, step in steps.items()
        }


def bulk_body(n: int) -> bytes:
    """The request of filler entry `n`."""
    return request_body(False, n + 1, BULK_REQUEST)


def bulk_entry(n: int) -> records.Entry:
    """Filler entry `n`: a short chat exchange, for the start-up runs and the remote's pull."""
    return entry(bulk_body(n), False, "api.openai.com", 443, BULK_RESPONSE)


#: The body size of a filler entry's answer (json_response pads to about BULK_RESPONSE).
BULK_RESPONSE_SIZE = len(json_response(BULK_RESPONSE))


def _part(task: tuple[int, int, Path]) -> list[tuple[bytes, bytes]]:
    """Filler entries start..stop-1: written as a flow file part, returned packed."""
    start, stop, flows = task
    entries = [bulk_entry(n) for n in range(start, stop)]
    flowfile.write_flows(entries, flows)
    return [(e.key.encode(), records.pack(e)) for e in entries]


def startup_sets(
    directory: Path, hits: list[records.Entry], sizes: tuple[int, ...], say: Callable[[str], None]
) -> dict[int, tuple[Path, Path]]:
    """For each size, a cache_dir and a flow file with the hit entries plus `size` fillers.

    The fillers of the largest size are made once, in parallel chunks (flow files are
    concatenations of records, so the parts join into one file); smaller sets are prefixes.
    """
    import multiprocessing

    directory.mkdir(parents=True)
    bounds = sorted({0, *sizes})
    tasks = [
        (a, min(a + 25_000, b), directory / f"part-{a}.mitm")
        for lo, b in itertools.pairwise(bounds)
        for a in range(lo, b, 25_000)
    ]
    say(f"start-up: generating {max(sizes)} entries and their flows")
    if max(sizes) > 5000:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            parts = pool.map(_part, tasks)
    else:
        parts = [_part(t) for t in tasks]
    head = directory / "hits.mitm"
    flowfile.write_flows(hits, head)
    sets = {}
    for size in sizes:
        store, flows = directory / f"store-{size}", directory / f"flows-{size}.mitm"
        with Store(store, map_size=4 << 30) as db:
            db.put_many([(e.key.encode(), records.pack(e)) for e in hits])
            for (a, _, _), rows in zip(tasks, parts, strict=True):
                if a < size:
                    db.put_many(rows)
        with flows.open("wb") as out:
            for path in [head, *(t[2] for t in tasks if t[0] < size)]:
                with path.open("rb") as part:
                    shutil.copyfileobj(part, out)
        sets[size] = (store, flows)
    return sets
