"""The hub's TLS certificate: a self-signed one made by ``crc hub init-tls``, or one from a CA.

Daemons and masters pin the certificate by the SHA-256 of its DER form (``sha256:<hex>``), so a hub with another
certificate is refused even when a trusted CA signed it.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocol import CrcError

PIN_PREFIX = "sha256:"


class TlsError(CrcError):
    """A certificate or key is missing, unreadable or does not match."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> TlsFiles:
        return cls(data_dir / "tls" / "hub.crt", data_dir / "tls" / "hub.key")

    def exist(self) -> bool:
        return self.cert.exists() and self.key.exists()


def fingerprint(cert_pem: bytes) -> str:
    """``sha256:<hex>`` of the certificate's DER encoding: what clients pin."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return PIN_PREFIX + hashlib.sha256(der).hexdigest()


def create_self_signed(files: TlsFiles, names: list[str], addresses: list[str], *, days: int = 825) -> str:
    """Write a new key (0600) and a self-signed certificate for ``names`` and ``addresses``; returns the pin.

    Raises:
        TlsError: an address is not an IP address.
    """
    try:
        ips = [ipaddress.ip_address(a) for a in addresses]
    except ValueError as exc:
        raise TlsError(f"not an IP address: {exc}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or addresses or ["crc-hub"])[0])])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    files.cert.write_bytes(cert_pem)
    return fingerprint(cert_pem)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The hub's TLS context (TLS 1.2 or newer).

    Raises:
        TlsError: the files are missing, unreadable or do not belong together.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use the TLS certificate {files.cert} with key {files.key}: {exc}") from None
    return context
