"""The server side of a replayed WebSocket session, on 127.0.0.1 (SPEC §13).

mitmproxy's WebSocket layer relays every message, and the close, to a server connection:
an addon that answers the handshake's 101 itself leaves it none, and mitmproxy's HTTP
layer fails on the first message or the close (a KeyError on its connection table). So a
replayed session is forwarded instead, as a paced hit is (mitm/pacedreplay.py), never to
the provider: to this server, in the proxy's own process and event loop (mitm/loopback.py).
It answers the handshake (wsproto computes `sec-websocket-accept` from the client's nonce),
sends the take's opening messages, and then for each client message the server messages
it releases (core/wsmatch.py), at their recorded pace under cache_replay_timing. A client
message that differs gets a close with DIVERGED_CODE and a reason naming its index.
mitmproxy sees a real server: its messages, its close, its hooks, mitmweb's message list.

The server starts on the first replayed session; a proxy that replays none never starts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import wsproto
from mitmproxy.http import RequestData
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws

from provider_cache.core import wsmatch
from provider_cache.core.pacing import due_times
from provider_cache.core.wsrecords import Message
from provider_cache.mitm.loopback import HOST as HOST  # where the player is, for its callers
from provider_cache.mitm.loopback import Loopback, OnLoopback, Target

logger = logging.getLogger(__name__)

#: The path a replayed session's handshake asks the server for, followed by the flow's id.
PATH = "/provider-cache-websocket/"
READ_SIZE = 1 << 16


@dataclass
class Plan:
    """A replayed session: the conversation, how fast, what the 101 says, the flow's own
    target (given back once the 101 is in), and who hears of a divergence."""

    conversation: wsmatch.Conversation
    factor: float | None
    subprotocol: str | None
    headers: list[tuple[bytes, bytes]]
    target: Target
    on_diverged: Callable[[wsmatch.Divergence], None]
    diverged: wsmatch.Divergence | None = None


class Player(OnLoopback):
    def __init__(self) -> None:
        #: Plans by flow id, from the handshake until the session ends.
        self.plans: dict[str, Plan] = {}
        self.loopback = Loopback(self._serve, PATH)

    async def start(self) -> None:
        """Started once; an OSError for the caller (the session cannot be replayed), and
        the next session tries again."""
        await self.loopback.start()

    def point(self, flow_id: str, data: RequestData, plan: Plan) -> None:
        """Point the flow's request (its `data`) at this server (its target is in `plan`)."""
        self.plans[flow_id] = plan
        self.loopback.point(flow_id, data)

    @staticmethod
    def restore(data: RequestData, plan: Plan) -> None:
        """The request's own target back (mitmweb, flow files and the console show it)."""
        Loopback.restore(data, plan.target)

    def close(self) -> None:
        self.loopback.close()
        self.plans.clear()

    # -- the server ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One session per connection (mitmproxy opens one per upgraded flow)."""
        session = _Session(writer, self.plans)
        try:
            while not session.over:
                data = await reader.read(READ_SIZE)
                await session.received(data or None)
                if not data:
                    break
        except (ConnectionError, wsproto.utilities.LocalProtocolError):
            pass  # mitmproxy hung up, or sent what no WebSocket client would: dropped
        except wsproto.utilities.RemoteProtocolError as e:
            logger.warning("provider-cache: replayed WebSocket session broken: %s", e)


class _Session:
    """One connection's WebSocket state: wsproto's, the plan, a message being assembled."""

    def __init__(self, writer: asyncio.StreamWriter, plans: dict[str, Plan]) -> None:
        self.writer = writer
        self.plans = plans
        self.ws = WSConnection(ConnectionType.SERVER)
        self.plan: Plan | None = None
        self.parts: list[bytes | str] = []
        self.over = False

    async def received(self, data: bytes | None) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if self.over:
                return
            await self._event(event)

    async def _event(self, event: ws.Event) -> None:
        if isinstance(event, ws.Request):
            await self._handshake(event)
        elif isinstance(event, ws.Message):
            self.parts.append(event.data)
            if event.message_finished:
                parts, self.parts = self.parts, []
                await self._client(parts)
        elif isinstance(event, ws.Ping):
            await self._send(event.response())
        elif isinstance(event, ws.CloseConnection):
            if self.ws.state is wsproto.ConnectionState.REMOTE_CLOSING:
                await self._send(event.response())
            self.over = True

    async def _handshake(self, event: ws.Request) -> None:
        flow_id = event.target.partition("?")[0].removeprefix(PATH)
        plan = self.plans.get(flow_id) if event.target.startswith(PATH) else None
        if plan is None:
            await self._send(ws.RejectConnection(status_code=404))
            self.over = True
            return
        self.plan = plan
        chosen = plan.subprotocol if plan.subprotocol in event.subprotocols else None
        await self._send(ws.AcceptConnection(subprotocol=chosen, extra_headers=plan.headers))
        await self._play(plan.conversation.opening())

    async def _client(self, parts: list[bytes | str]) -> None:
        plan = self.plan
        if plan is None or plan.diverged is not None:
            return
        text = bool(parts) and isinstance(parts[0], str)
        content = "".join(parts).encode() if text else b"".join(parts)  # type: ignore[arg-type]
        step = plan.conversation.client(text, content)
        if step.diverged is not None:
            plan.diverged = step.diverged
            plan.on_diverged(step.diverged)  # counted before the client can see the close
            await self._close(wsmatch.DIVERGED_CODE, step.diverged.reason())
            return
        await self._play(step)

    async def _play(self, step: wsmatch.Step) -> None:
        factor = self.plan.factor if self.plan is not None else None
        loop = asyncio.get_running_loop()
        start = loop.time()
        offsets = [max(0.0, m.offset - step.anchor) for m in step.release]
        dues = due_times(offsets, factor) if factor is not None else [0.0] * len(offsets)
        for message, due in zip(step.release, dues, strict=True):
            wait = start + due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._send(_event_of(message))
        if step.close is not None:
            await self._close(*step.close)

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.state is wsproto.ConnectionState.OPEN:
            await self._send(ws.CloseConnection(code=code, reason=reason))

    async def _send(self, event: ws.Event) -> None:
        self.writer.write(self.ws.send(event))
        await self.writer.drain()


def _event_of(message: Message) -> ws.Event:
    if message.text:
        return ws.TextMessage(data=message.content.decode())
    return ws.BytesMessage(data=message.content)
