"""A local WSS stand-in for providers' WebSocket APIs, on the `websockets` library.

Three dialects, by path:

* OpenAI Realtime (`/v1/realtime?model=…`): `session.created` on open; `session.update` →
  `session.updated`; `conversation.item.create` → `conversation.item.created`;
  `input_audio_buffer.append` (base64 audio) is kept, `input_audio_buffer.commit` →
  `input_audio_buffer.committed` with the audio's SHA-256; `response.create` →
  `response.created`, three `response.output_text.delta`, `response.done`.
* OpenAI Responses WebSocket mode (`/v1/responses`): `response.create` → `response.created`,
  deltas, `response.completed`.
* Gemini Live (`/ws/…GenerativeService.BidiGenerateContent?key=…`): JSON in *binary*
  frames, as Google sends them: `setup` → `setupComplete`; `clientContent` → a
  `serverContent.modelTurn` and `serverContent.turnComplete`; a `realtimeInput` audio
  chunk → `serverContent.inputTranscription` with its digest.

Any binary client frame (raw audio) is answered with `audio.received` and its SHA-256.
Every answer carries the connection's number (`sess_N`), so a test tells a replayed
session from a live one. Faults, by the text of a Realtime item or Responses input:
`close-error` (the server closes with 1011) and `cut` (the TCP connection is dropped).
`/echo` echoes (a WebSocket of no provider). `connections` counts handshakes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from tests.support.certs import TestPKI, make_test_ca

REALTIME_PATH = "/v1/realtime"
RESPONSES_PATH = "/v1/responses"
GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
ECHO_PATH = "/echo"
DELTAS = 3


class FakeWebSocketProvider:
    def __init__(self, directory: Path) -> None:
        self.pki: TestPKI = make_test_ca(directory)
        self.connections = 0
        #: Each handshake's path and headers, as the provider got them.
        self.handshakes: list[tuple[str, dict[str, str]]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def ca_path(self) -> Path:
        return self.pki.ca_path

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.socket.getsockname()[1]

    def start(self) -> Self:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.cert_path, self.pki.key_path)
        self._server = serve(
            self._handle,
            "127.0.0.1",
            0,
            ssl=context,
            compression=None,
            select_subprotocol=_realtime_if_offered,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the dialects ----------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path
        with self._lock:
            self.connections += 1
            number = self.connections
            self.handshakes.append(
                (path, {k.lower(): v for k, v in ws.request.headers.raw_items()})
            )
        route = path.partition("?")[0]
        dialects = {
            REALTIME_PATH: _Realtime,
            RESPONSES_PATH: _Responses,
            GEMINI_PATH: _Gemini,
            ECHO_PATH: _Echo,
        }
        dialect = dialects.get(route)
        if dialect is None:
            ws.close(1008, "no such path")
            return
        try:
            dialect(ws, number).run()
        except ConnectionClosed:
            pass
        except Exception as e:  # the test fails on it (fixture), not silently
            self.errors.append(f"{route}: {type(e).__name__}: {e}")
            raise


class _Dialect:
    def __init__(self, ws: ServerConnection, number: int) -> None:
        self.ws = ws
        self.session = f"sess_{number}"
        self.events = 0

    def run(self) -> None:
        self.opened()
        for message in self.ws:
            if isinstance(message, bytes) and not self.binary_json:
                self.send({"type": "audio.received", "sha256": _digest(message)})
                continue
            if not self.answer(json.loads(message)):
                return

    binary_json = False

    def opened(self) -> None:
        pass

    def answer(self, message: dict) -> bool:
        """Answer one client message; False when the connection is over."""
        raise NotImplementedError

    def send(self, event: dict[str, Any]) -> None:
        self.events += 1
        event.setdefault("event_id", f"event_{self.session}_{self.events}")
        self.ws.send(json.dumps(event))

    def fault(self, text: str) -> bool:
        """Misbehave as `text` asks; True when it did (the connection is over)."""
        if text == "close-error":
            self.ws.close(1011, "internal error")
            return True
        if text == "cut":
            self.ws.socket.close()  # no close frame: the session is cut
            return True
        return False

    def stream(self, prefix: str, text: str, done: str) -> None:
        response = {"id": f"resp_{self.session}", "status": "in_progress"}
        self.send({"type": f"{prefix}.created", "response": response})
        for n in range(DELTAS):
            self.send({"type": "response.output_text.delta", "delta": f"{text}[{n}] "})
        self.send({"type": done, "response": response | {"status": "completed"}})


class _Realtime(_Dialect):
    def opened(self) -> None:
        model = self.ws.request.path.partition("model=")[2] if self.ws.request else ""
        self.audio = b""
        self.said = ""
        self.send({"type": "session.created", "session": {"id": self.session, "model": model}})

    def answer(self, message: dict) -> bool:
        kind = message.get("type")
        if kind == "session.update":
            self.send({"type": "session.updated", "session": message.get("session", {})})
        elif kind == "conversation.item.create":
            item = message.get("item", {})
            self.said = "".join(c.get("text", "") for c in item.get("content", []))
            if self.fault(self.said):
                return False
            self.send({"type": "conversation.item.created", "item": item})
        elif kind == "input_audio_buffer.append":
            self.audio += base64.b64decode(message.get("audio", ""))
        elif kind == "input_audio_buffer.commit":
            self.send({"type": "input_audio_buffer.committed", "sha256": _digest(self.audio)})
        elif kind == "response.create":
            self.stream("response", f"{self.session} heard {self.said!r}", "response.done")
        else:
            self.send({"type": "error", "error": {"message": f"unknown event {kind!r}"}})
        return True


class _Responses(_Dialect):
    def answer(self, message: dict) -> bool:
        if message.get("type") != "response.create":
            self.send({"type": "error", "error": {"message": "want response.create"}})
            return True
        said = str(message.get("input", ""))
        if self.fault(said):
            return False
        self.stream("response", f"{self.session} answers {said!r}", "response.completed")
        return True


class _Gemini(_Dialect):
    binary_json = True

    def send(self, event: dict[str, Any]) -> None:
        self.ws.send(json.dumps(event).encode())  # Gemini Live sends JSON as binary frames

    def answer(self, message: dict) -> bool:
        if "setup" in message:
            self.send({"setupComplete": {}})
        elif "clientContent" in message:
            turns = message["clientContent"].get("turns", [])
            text = " ".join(p.get("text", "") for t in turns for p in t.get("parts", []))
            turn = {"parts": [{"text": f"{self.session} on {text!r}"}]}
            self.send({"serverContent": {"modelTurn": turn}})
            self.send({"serverContent": {"turnComplete": True}})
        elif "realtimeInput" in message:
            chunks = message["realtimeInput"].get("mediaChunks", [])
            audio = b"".join(base64.b64decode(c.get("data", "")) for c in chunks)
            self.send({"serverContent": {"inputTranscription": {"sha256": _digest(audio)}}})
        return True


class _Echo(_Dialect):
    def run(self) -> None:
        for message in self.ws:
            self.ws.send(message)


def _realtime_if_offered(
    ws: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """OpenAI's browser clients offer `realtime` and their key as subprotocols."""
    return Subprotocol("realtime") if "realtime" in offered else None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
