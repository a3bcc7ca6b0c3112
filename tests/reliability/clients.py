"""Small clients for the reliability suite: JSON bodies and raw HTTPS through the proxy."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from tests.support.proxy import ROOT_DIR

CHAT = "https://api.openai.com/v1/chat/completions"
ECHO = "https://api.openai.com/v1/echo"


def chat_body(content: str, *, stream: bool = False, model: str = "m") -> bytes:
    messages = [{"role": "user", "content": content}]
    return json.dumps({"model": model, "stream": stream, "messages": messages}).encode()


def raw_https(proxy_port: int, ca: Path, host: str, request: bytes, timeout: float = 10) -> bytes:
    """Send exact bytes through the proxy's CONNECT tunnel; read the answer until the peer closes.

    For requests no well-behaved client library would send (odd bytes in headers, odd methods).
    """
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as sock:
        sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        context = ssl.create_default_context(cafile=str(ca))
        with context.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(request)
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)


def verify_store(cache_dir: Path) -> subprocess.CompletedProcess:
    """`recordings.py verify`, as a user runs it (read-only; fine beside running proxies)."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT_DIR / "scripts/recordings.py"),
            "--cache-dir",
            str(cache_dir),
            "verify",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
