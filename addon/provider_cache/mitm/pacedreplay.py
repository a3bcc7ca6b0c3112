"""Paced replay (SPEC §4, Timing): a hit's chunks sent at their recorded offsets.

mitmproxy sends a response that an addon sets in `request` in one piece (its HTTP layer's
`send_response`), and its ASGI addon buffers the whole body too: neither can pace. So a
paced hit is forwarded instead — never to the provider: to this module's server on
127.0.0.1, in the proxy's own process and event loop (mitm/loopback.py), which sends the
stored status and headers at once and each chunk when it is due. `flow.response.stream`,
set when those headers arrive (`responseheaders`), makes mitmproxy pass every chunk on as
it comes.

The flow's request is pointed at the server in `request` and given its own scheme, host,
port and path back once the answer's headers are in, so mitmweb, flow files and the other
addons see the request the client sent. The server starts on the first paced hit: the
default (`cache_replay_timing=none`) never starts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from mitmproxy import http

from provider_cache.core.pacing import due_times
from provider_cache.mitm import flows
from provider_cache.mitm.loopback import HOST, Loopback, OnLoopback, Target

logger = logging.getLogger(__name__)

#: The path a paced flow asks the server for, followed by the flow's id.
PATH = "/provider-cache-pace/"
#: A request head longer than this is not mitmproxy's: the connection is dropped.
HEAD_LIMIT = 1 << 16
READ_SIZE = 1 << 16
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass
class Paced:
    """A paced hit on its way: what to send, how fast, and the request's own target."""

    replay: flows.Replay
    factor: float
    target: Target


class PacedReplay(OnLoopback):
    def __init__(self) -> None:
        #: Paced flows by id, from `request` until their answer's headers are in.
        self.flows: dict[str, Paced] = {}
        self.loopback = Loopback(self._serve, PATH, host=HOST, limit=HEAD_LIMIT)

    def forward(
        self, flow: http.HTTPFlow, replay: flows.Replay, factor: float
    ) -> Awaitable[None] | None:
        """Point the flow at the server; an awaitable for mitmproxy when it must start."""
        if flow.server_conn.via is not None:  # upstream proxy mode: it could not reach us
            flow.response = flows.replay_response(replay, flow.request.http_version)
            return None
        if self.server is not None:
            self._point(flow, replay, factor)
            return None
        return self._start_then_point(flow, replay, factor)

    async def _start_then_point(
        self, flow: http.HTTPFlow, replay: flows.Replay, factor: float
    ) -> None:
        """Never leaves the flow without an answer or a loopback target: a flow of a hit
        must not go on to the provider (replay mode forbids it)."""
        try:
            await self.loopback.start()  # the next paced hit tries again if it fails
        except BaseException as e:
            flow.response = flows.replay_response(replay, flow.request.http_version)
            if not isinstance(e, OSError):
                raise
            logger.error("provider-cache: paced replay unavailable (%s): served unpaced", e)
            return
        self._point(flow, replay, factor)

    def _point(self, flow: http.HTTPFlow, replay: flows.Replay, factor: float) -> None:
        data = flow.request.data
        headers = flow.request.headers
        if data.content and "content-length" not in headers and "transfer-encoding" not in headers:
            # An HTTP/2 request need not say its length; mitmproxy would send its body to
            # the HTTP/1 server unframed, and the next request on the connection after it.
            headers["content-length"] = str(len(data.content))
        self.flows[flow.id] = Paced(replay, factor, self.loopback.point(flow.id, data))

    def headers(self, flow: http.HTTPFlow) -> None:
        """The paced answer's headers are in: stream it, give the request its target back."""
        paced = self.flows.pop(flow.id, None)
        if paced is None or flow.response is None:
            return
        self.loopback.restore(flow.request.data, paced.target)
        flow.response.stream = True
        # Shown by mitmweb and kept by flow files; mitmproxy sends what the server streams.
        flow.response.data.content = paced.replay.body

    def forget(self, flow: http.HTTPFlow) -> bool:
        """A paced flow broke before its answer's headers (True); its request is given back."""
        paced = self.flows.pop(flow.id, None)
        if paced is None:
            return False
        self.loopback.restore(flow.request.data, paced.target)
        return True

    def close(self) -> None:
        self.loopback.close()
        self.flows.clear()

    # -- the server ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """mitmproxy's connection: request after request (it keeps connections alive)."""
        try:
            while head := await _read_head(reader):
                flow_id = _flow_id(head)
                paced = self.flows.get(flow_id) if flow_id else None
                if paced is None:
                    writer.write(NOT_FOUND)
                    await writer.drain()
                    return
                await _send(writer, paced)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # not a request of mitmproxy's, or one cut short: the connection is dropped
        except ConnectionError:
            pass  # the client hung up mid-answer: mitmproxy closed its side


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """One request's head, its body read and dropped; b"" when the connection ended."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise
        return b""
    lines = head.split(b"\r\n")
    fields = dict(_field(line) for line in lines[1:] if line)
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        await _drop_chunked(reader)
    else:
        await _drop(reader, int(fields.get(b"content-length", b"0")))
    return head


def _field(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if not sep:
        raise ValueError("not a header line")
    return name.strip().lower(), value.strip()


def _flow_id(head: bytes) -> str | None:
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[1].startswith(PATH.encode()):
        return None
    return parts[1][len(PATH) :].decode("ascii", "replace")


async def _drop(reader: asyncio.StreamReader, size: int) -> None:
    if size < 0:
        raise ValueError("negative content-length")
    while size:
        got = await reader.read(min(size, READ_SIZE))
        if not got:
            raise asyncio.IncompleteReadError(b"", size)
        size -= len(got)


async def _drop_chunked(reader: asyncio.StreamReader) -> None:
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        await _drop(reader, size + 2)
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the blank line
        pass


async def _send(writer: asyncio.StreamWriter, paced: Paced) -> None:
    """The stored status and headers now, then each chunk when it is due, as an HTTP chunk:
    a provider streams without a content-length, and clients read a body of known length
    in blocks (urllib3, under boto3, waits for whole kilobytes), which would undo the pace."""
    replay = paced.replay
    response = replay.entry.response
    lines = [b"HTTP/1.1 %d %s" % (replay.status, replay.reason)]
    lines += [name + b": " + value for name, value in replay.headers if name != b"content-length"]
    lines.append(b"transfer-encoding: chunked")
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
    await writer.drain()
    loop = asyncio.get_running_loop()
    start = loop.time()
    chunks = response.chunks or []
    for chunk, due in zip(chunks, due_times(response.offsets or [], paced.factor), strict=True):
        wait = start + due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if chunk:  # an empty one would end the body
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
