"""The benchmark's fake HTTPS provider: `python scripts/benchmark/upstream.py DIR DELAY`.

Answers every POST from memory: the JSON completion with a content-length, or, for a
streaming request, the SSE chunks one by one, `DELAY` seconds apart. Prints its port.

Deliberately not tests/support/fake_provider.py: that one is a threaded `http.server`
built to be observable and to misbehave on demand, and it lives in the test tree; a
benchmark upstream shares two cores with the proxy under test, so it must cost as little
per request as possible (asyncio, no parsing beyond the content-length), and the bench
must run from a checkout without importing tests. Its certificate is self-signed (made
with `cryptography`, a mitmproxy dependency); the proxies run with ssl_insecure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scripts/, for `benchmark`
# Run as a script by the bench, so its sibling is imported directly.
from benchmark.net import JSON_HEADERS, SSE_HEADERS, is_stream_request, json_response, sse_chunks


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the proxy runs with ssl_insecure)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provider-cache bench")])
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream.pem", directory / "upstream-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _head(status: bytes, headers: tuple[tuple[bytes, bytes], ...], extra: bytes) -> bytes:
    lines = [b"HTTP/1.1 " + status] + [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


class Upstream:
    """Answers every POST: JSON with content-length, or a chunked SSE stream paced by `delay`."""

    def __init__(self, delay: float):
        self.delay = delay
        body = json_response()
        self.json = _head(b"200 OK", JSON_HEADERS, b"content-length: %d\r\n" % len(body)) + body
        self.sse_head = _head(b"200 OK", SSE_HEADERS, b"transfer-encoding: chunked\r\n")
        self.sse = [b"%x\r\n%s\r\n" % (len(c), c) for c in sse_chunks()]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                body = await reader.readexactly(length) if length else b""
                if is_stream_request(body):
                    await self._stream(writer)
                else:
                    writer.write(self.json)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(self.sse_head)
        for chunk in self.sse:
            writer.write(chunk)
            await writer.drain()
            if self.delay:
                await asyncio.sleep(self.delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def serve_upstream(directory: Path, delay: float) -> None:
    cert, key = make_certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(
        Upstream(delay).handle, "127.0.0.1", 0, ssl=context, backlog=256
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: upstream.py DIR DELAY_SECONDS")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_upstream(Path(sys.argv[1]), float(sys.argv[2])))
