"""A server on 127.0.0.1 that a flow is pointed at instead of its provider, in the proxy's
own process and event loop: the paced-replay server (mitm/pacedreplay.py) and the
WebSocket player (mitm/wsplayer.py).

It binds a free port on first use, so that a proxy that never needs it never opens one,
and starts once however many flows ask at the same time. A flow is pointed at it by its
request's data fields (the properties would rewrite the Host header too) with a path of
the server's own followed by the flow's id, and is given its own target back once the
answer's headers are in, so that mitmweb, flow files and the other addons see the request
the client sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mitmproxy.http import RequestData

HOST = "127.0.0.1"

#: A request's own target: scheme, host, port, path.
Target = tuple[bytes, str, int, bytes]
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Loopback:
    def __init__(
        self, serve: Serve, path: str, *, host: str = HOST, limit: int | None = None
    ) -> None:
        """`serve` handles one connection; `path` is what a pointed flow asks for, before
        its id; `limit` bounds the stream reader's lines (asyncio's default without it)."""
        self.serve = serve
        self.path = path
        self.host = host
        self.limit = limit
        self.server: asyncio.Server | None = None
        self.port = 0
        self._starting: asyncio.Future[None] | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Started once; an OSError for the caller. A start that failed is tried again by
        the next caller; one whose caller was cancelled goes on, for the next to await."""
        if self.server is not None:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._bind())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except BaseException:
            if starting.done() and self._starting is starting:
                self._starting = None
            raise

    async def _bind(self) -> None:
        limit = {} if self.limit is None else {"limit": self.limit}
        self.server = await asyncio.start_server(self._connected, self.host, 0, **limit)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each connection kept until it ends, for `close` to end it first."""
        self._connections.add(writer)
        try:
            await self.serve(reader, writer)
        finally:
            self._connections.discard(writer)
            writer.close()

    def point(self, flow_id: str, data: RequestData) -> Target:
        """Point the flow's request (its `data`) at this server; its own target, to give back."""
        target = (data.scheme, data.host, data.port, data.path)
        data.scheme, data.host, data.port = b"http", self.host, self.port
        data.path = (self.path + flow_id).encode()
        return target

    @staticmethod
    def restore(data: RequestData, target: Target) -> None:
        data.scheme, data.host, data.port, data.path = target

    def close(self) -> None:
        """The server and every connection it has open (mitmproxy's `done`); a later
        `start` binds again."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self._starting = None
        for writer in list(self._connections):
            writer.close()
        self._connections.clear()


class OnLoopback:
    """What a loopback serves (paced replay, the WebSocket player): its server and port, as
    its callers and their tests look them up."""

    loopback: Loopback

    @property
    def server(self) -> asyncio.Server | None:
        return self.loopback.server

    @property
    def port(self) -> int:
        return self.loopback.port
