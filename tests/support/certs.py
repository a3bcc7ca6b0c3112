"""Throwaway PKI for tests: a private CA and one server certificate for the fake providers.

Tests must never depend on real provider certificates or on ``~/.mitmproxy``, so every test
session mints its own CA in a temporary directory and points clients at it explicitly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_DNS_NAMES: tuple[str, ...] = (
    "localhost",
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "*.openai.azure.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
)
SERVER_IPS: tuple[str, ...] = ("127.0.0.1",)


@dataclass(frozen=True)
class TestPKI:
    """Paths of the PEM files written by :func:`make_test_ca`."""

    __test__ = False  # not a pytest test class despite the name

    ca_path: Path
    cert_path: Path
    key_path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "provider-cache tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity() -> tuple[dt.datetime, dt.datetime]:
    """A window that tolerates clock skew but expires soon, so leaked files are useless."""
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(days=1), now + dt.timedelta(days=30)


def _make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("provider-cache test CA"))
        .issuer_name(_name("provider-cache test CA"))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    san: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_DNS_NAMES]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_test_ca(directory: Path) -> TestPKI:
    """Write ``ca.pem``, ``server.pem`` (leaf + CA chain) and ``server-key.pem`` into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca()
    server_key, server_cert = _make_server(ca_key, ca_cert)
    pki = TestPKI(
        ca_path=directory / "ca.pem",
        cert_path=directory / "server.pem",
        key_path=directory / "server-key.pem",
    )
    pki.ca_path.write_bytes(_pem(ca_cert))
    pki.cert_path.write_bytes(_pem(server_cert) + _pem(ca_cert))
    pki.key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.key_path.chmod(0o600)
    return pki
