"""The websocket section (issue 17): a replayed WebSocket session's per-message round trip
against the same session passed through mitmdump to the fake provider.

An OpenAI Realtime conversation (tests/support/fake_ws.py, run by ws_upstream.py): the
client sends `conversation.item.create` with a text of the payload's size and waits for
the `conversation.item.created` that echoes it; one round trip is send to answer, timed
in the client. Variants, all mitmdump through the client's CONNECT:

    replay       the cache in replay mode, the conversation recorded beforehand; the
                 provider is never asked (each replayed session opens with the recorded
                 session's id, which a live one could not)
    passthrough  mitmdump without the addon, to the fake provider (the reference)
    record       the cache in record mode, every session a new one (its own URL)

each at mitmdump's defaults (a console line per message) and with flow_detail=0 (CI).

A window is `ws_sessions` sessions one after another, `ws_messages` round trips each;
variants in an order rotated every repetition, the ratios taken within a repetition.
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from benchmark import proxy as bench_proxy
from benchmark.report import percentile

if TYPE_CHECKING:
    from bench import Bench

SECTION = "websocket"
REPLAY, PASSTHROUGH, RECORD = "replay", "passthrough", "record"
#: The settings cache_run.py applies in CI: mitmdump's line per message not printed.
QUIET = "flow_detail=0"
VARIANTS = (REPLAY, PASSTHROUGH, RECORD, *(f"{v}, {QUIET}" for v in (REPLAY, PASSTHROUGH, RECORD)))
HOSTS = "cache_hosts=127.0.0.1"
PATH = "/v1/realtime?model=bench"
#: Round trips of a warm-up session (each proxy's first, not measured).
WARMUP_MESSAGES = 3
#: The longest one answer may take: a bound, not a measure.
TIMEOUT = 30.0


def payload_name(size: int) -> str:
    return f"text {size} B"


def message(index: int, size: int) -> str:
    """The client's message `index` of a conversation: the same for the same index and
    size, which replay needs."""
    text = f"{index}:".ljust(size, "x")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return json.dumps({"type": "conversation.item.create", "item": item})


class Client:
    """Sessions through one proxy to the fake provider at `upstream`."""

    def __init__(self, proxy: bench_proxy.Proxy, upstream: int, ca: Path) -> None:
        self.proxy = proxy
        self.base = f"wss://127.0.0.1:{upstream}{PATH}"
        self.context = ssl.create_default_context(cafile=str(ca))

    def session(self, size: int, messages: int, url_suffix: str = "") -> tuple[str, float, list]:
        """One conversation: the session id it opened with, the handshake's seconds (to the
        opening event) and each round trip's seconds."""
        try:
            return self._session(size, messages, url_suffix)
        except (OSError, WebSocketException) as e:  # TimeoutError is an OSError
            raise SystemExit(
                f"bench: {self.proxy.name}: {type(e).__name__}: {e}\n{self.proxy.log_tail()}"
            ) from e

    def _session(self, size: int, messages: int, url_suffix: str) -> tuple[str, float, list]:
        started = time.perf_counter()
        with connect(
            f"{self.base}&size={size}{url_suffix}",  # a session per size: its own key
            proxy=f"http://127.0.0.1:{self.proxy.port}",
            ssl=self.context,
            compression=None,  # as the openai SDK connects
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        ) as ws:
            opened = json.loads(ws.recv(timeout=TIMEOUT))
            handshake = time.perf_counter() - started
            trips = []
            for index in range(messages):
                sent = message(index, size)
                start = time.perf_counter()
                ws.send(sent)
                answer = ws.recv(timeout=TIMEOUT)
                trips.append(time.perf_counter() - start)
                self.check(json.loads(answer), json.loads(sent), index)
        if opened.get("type") != "session.created":
            raise SystemExit(f"bench: {self.proxy.name} opened with {opened.get('type')!r}")
        return opened["session"]["id"], handshake, trips

    def check(self, answer: dict, sent: dict, index: int) -> None:
        if answer.get("type") != "conversation.item.created" or answer["item"] != sent["item"]:
            raise SystemExit(
                f"bench: {self.proxy.name}: answer {index} is {str(answer)[:200]}\n"
                f"{self.proxy.log_tail()}"
            )


def run(bench: Bench) -> None:
    cfg = bench.config
    upstream = bench.ws_upstream()
    replay_dir = bench.work / "ws-recorded"
    recorder = bench_proxy.cache("prerecord", replay_dir, "record", HOSTS, **bench.proxy_kw())
    start(bench, recorder, upstream)
    recorded = {
        size: Client(recorder, upstream, bench.ca).session(size, cfg.ws_messages)[0]
        for size in cfg.ws_sizes
    }
    bench.stop_all()
    assert_counts(replay_dir, recorded=len(cfg.ws_sizes))
    proxies = [variant(bench, name, replay_dir) for name in VARIANTS]
    for proxy in proxies:
        start(bench, proxy, upstream, min(cfg.ws_sizes))
    for rep in range(cfg.reps):
        bench.say(f"websocket: repetition {rep + 1}/{cfg.reps}")
        for i, size in enumerate(cfg.ws_sizes):
            shift = (rep + i) % len(proxies)
            for proxy in proxies[shift:] + proxies[:shift]:
                client = Client(proxy, upstream, bench.ca)
                bench.samples.append({"rep": rep, **window(bench, client, size, recorded[size])})
    bench.stop_all()
    sessions = cfg.reps * len(cfg.ws_sizes) * cfg.ws_sessions + 1  # and the warm-up
    for proxy in proxies:
        if "cache_dir" in proxy.extra:
            counted = "hits" if proxy.name.startswith(REPLAY) else "recorded"
            assert_counts(proxy.extra["cache_dir"], **{counted: sessions})


def variant(bench: Bench, name: str, replay_dir: Path) -> bench_proxy.Proxy:
    """A variant by its name: what it is, then its settings after a comma."""
    kind, _, setting = name.partition(", ")
    settings = (setting,) if setting else ()
    kw = bench.proxy_kw()
    if kind == PASSTHROUGH:
        return bench_proxy.plain(name, *settings, **kw)
    cache_dir = bench.work / ("ws-" + "".join(c if c.isalnum() else "-" for c in name))
    if kind == REPLAY:  # its own copy: each proxy counts its own hits
        shutil.copytree(replay_dir, cache_dir)
    mode = "replay" if kind == REPLAY else "record"
    kw["extra"] = {"cache_dir": cache_dir}
    return bench_proxy.cache(name, cache_dir, mode, HOSTS, *settings, **kw)


def window(bench: Bench, client: Client, size: int, recorded: str) -> dict:
    cfg, proxy = bench.config, client.proxy
    replayed = proxy.name.startswith(REPLAY)
    handshakes: list[float] = []
    trips: list[float] = []
    cpu = proxy.cpu()
    for _ in range(cfg.ws_sessions):
        opened, handshake, times = client.session(size, cfg.ws_messages, take(proxy))
        if (opened == recorded) != replayed:
            raise SystemExit(
                f"bench: {proxy.name} opened session {opened}, recorded {recorded}: "
                f"{'not replayed' if replayed else 'not live'}"
            )
        handshakes.append(handshake)
        trips += times
    cpu = proxy.cpu() - cpu
    trips.sort()
    handshakes.sort()
    return {
        "section": SECTION,
        "payload": payload_name(size),
        "concurrency": 1,
        "variant": proxy.name,
        "sessions": cfg.ws_sessions,
        "messages": len(trips),
        "p50_ms": 1000 * percentile(trips, 0.50),
        "p90_ms": 1000 * percentile(trips, 0.90),
        "handshake_ms": 1000 * percentile(handshakes, 0.50),
        "cpu_ms": 1000 * cpu / len(trips),
    }


def start(bench: Bench, proxy: bench_proxy.Proxy, upstream: int, size: int = 0) -> None:
    """Launch `proxy` and wait until it holds a session: one warm-up conversation (the
    prerecording proxy, `size` 0, only waits for its port)."""
    proxy.launch()
    bench.running.append(proxy)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proxy.alive():
        if bench.ca.exists() and _listening(proxy.port):
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"bench: {proxy.name} did not start:\n{proxy.log_tail()}")
    if size:
        Client(proxy, upstream, bench.ca).session(size, WARMUP_MESSAGES, take(proxy))


_takes = itertools.count(1)


def take(proxy: bench_proxy.Proxy) -> str:
    """The URL's end of a session: every recorded one new (its own key), else the same."""
    return f"&take={next(_takes)}" if proxy.name.startswith(RECORD) else ""


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def assert_counts(cache_dir: Path, **expected: int) -> None:
    """The cache counted what the section did: every replayed session a hit (none a miss),
    every recorded one stored (none turned away)."""
    stats = json.loads((cache_dir / "stats.json").read_text())
    got = {name: stats[name] for name in expected}
    rejected = {reason: n for reason, n in stats["rejected"].items() if n}
    misses = stats["misses"] if "hits" in expected else 0
    if got != expected or rejected or misses:
        raise SystemExit(
            f"bench: {cache_dir.name}: {got}, expected {expected}; misses {misses}, "
            f"rejected {rejected}"
        )
