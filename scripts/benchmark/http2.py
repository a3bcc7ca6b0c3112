"""An HTTP/2 load client for the benchmark: one connection through the proxy, many streams.

mitmproxy speaks HTTP/2 to clients that offer it in ALPN (its `http2` option is on by
default); httpx and the SDKs built on it offer it with `http2=True`. The same requests as
scripts/bench_net.Connection, multiplexed, with the `h2` package mitmproxy already uses.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import h2.config
import h2.connection
import h2.events

from benchmark.net import Result, Target, open_tunnel

#: Connection-specific headers are not allowed in HTTP/2 (RFC 9113 §8.2.2).
_H1_ONLY = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"}


class H2Connection:
    def __init__(self, target: Target, context: ssl.SSLContext):
        self.target = target
        self.context = context
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.pending: dict[int, tuple[asyncio.Future, dict]] = {}
        self.window_opened = asyncio.Event()
        headers = [(":method", "POST"), (":authority", target.host), (":scheme", "https")]
        headers += [(":path", target.path)]
        headers += [(k, v) for k, v in target.headers if k not in _H1_ONLY]
        self.headers = headers

    async def open(self) -> H2Connection:
        self.reader, self.writer = await open_tunnel(self.target, self.context)
        alpn = self.writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn != "h2":
            raise ConnectionError(f"the proxy did not negotiate HTTP/2 (ALPN {alpn!r})")
        self.h2.initiate_connection()
        self.writer.write(self.h2.data_to_send())
        self.task = asyncio.create_task(self._read())
        return self

    async def request(self, body: bytes) -> Result:
        stream = self.h2.get_next_available_stream_id()
        done = asyncio.get_running_loop().create_future()
        state: dict = {"start": 0.0, "status": 0, "cache": "", "size": 0, "first": None}
        self.pending[stream] = (done, state)
        self.h2.send_headers(stream, [*self.headers, ("content-length", str(len(body)))])
        state["start"] = time.perf_counter()
        await self._send(stream, body)
        await done
        end = time.perf_counter()
        ttfb = (state["first"] or end) - state["start"]
        return Result(state["status"], state["cache"], state["size"], ttfb, end - state["start"])

    async def _send(self, stream: int, body: bytes) -> None:
        """The body within the flow-control windows, waiting for WINDOW_UPDATEs as needed."""
        while body:
            room = min(self.h2.local_flow_control_window(stream), self.h2.max_outbound_frame_size)
            if room <= 0:
                self.writer.write(self.h2.data_to_send())
                self.window_opened.clear()
                await self.window_opened.wait()
                continue
            self.h2.send_data(stream, body[:room], end_stream=len(body) <= room)
            body = body[room:]
        self.writer.write(self.h2.data_to_send())

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.h2.receive_data(data):
                self._on(event)
            self.writer.write(self.h2.data_to_send())
        for done, _ in self.pending.values():
            if not done.done():
                done.set_exception(ConnectionError("connection closed"))

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.WindowUpdated):
            self.window_opened.set()
        if not hasattr(event, "stream_id") or event.stream_id not in self.pending:
            return
        done, state = self.pending[event.stream_id]
        if isinstance(event, h2.events.ResponseReceived):
            headers = dict(event.headers)
            state["status"] = int(headers[b":status"])
            state["cache"] = headers.get(b"x-provider-cache", b"").decode()
        elif isinstance(event, h2.events.DataReceived):
            state["first"] = state["first"] or time.perf_counter()
            state["size"] += len(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            del self.pending[event.stream_id]
            done.set_result(None)

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()
