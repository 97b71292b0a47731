"""TLS with pinning: a daemon or master accepts only the pinned certificate, even one a trusted CA signed."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import ssl
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients.link import HubLink, PinMismatch
from protocol import Identity, Role
from server.app import create_app
from server.core.appkeys import HUB_KEY
from server.settings import HubSettings
from server.tls import TlsFiles, create_self_signed, fingerprint, server_context


def test_init_tls_writes_a_private_key_and_a_certificate_for_the_names_and_addresses(tmp_path: Path) -> None:
    files = TlsFiles.in_data_dir(tmp_path)
    pin = create_self_signed(files, ["hub.example"], ["127.0.0.1", "::1"])
    assert pin == fingerprint(files.cert.read_bytes())
    assert pin.startswith("sha256:") and len(pin) == 7 + 64
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    san = x509.load_pem_x509_certificate(files.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["hub.example"]
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def _ca_signed(tmp_path: Path) -> tuple[TlsFiles, Path]:
    """A CA and a hub certificate it signed, for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    files = TlsFiles(tmp_path / "ca" / "hub.crt", tmp_path / "ca" / "hub.key")
    files.cert.parent.mkdir(parents=True)
    files.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ca_file = tmp_path / "ca" / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files, ca_file


@dataclass
class TlsHub:
    url: str
    master: Identity


async def _serve(tmp_path: Path, files: TlsFiles) -> AsyncIterator[TlsHub]:
    app = create_app(HubSettings(data_dir=tmp_path / "hub"))
    master = Identity.generate(secrets.token_bytes)
    await app[HUB_KEY].store.enroll_master("alice", master.public.to_text(), time.time())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(files))
    await site.start()
    try:
        yield TlsHub(f"https://127.0.0.1:{runner.addresses[0][1]}", master)
    finally:
        await runner.cleanup()


@pytest.fixture
async def self_signed_hub(tmp_path: Path) -> AsyncIterator[tuple[TlsHub, str]]:
    files = TlsFiles.in_data_dir(tmp_path / "tls-source")
    pin = create_self_signed(files, ["localhost"], ["127.0.0.1"])
    async for hub in _serve(tmp_path, files):
        yield hub, pin


async def test_a_client_with_the_right_pin_connects_to_a_self_signed_hub(self_signed_hub: tuple[TlsHub, str]) -> None:
    hub, pin = self_signed_hub
    link = await HubLink.connect(hub.url, hub.master, Role.MASTER, pin=pin)
    await link.close()


async def test_a_client_with_another_pin_refuses_the_hub(self_signed_hub: tuple[TlsHub, str]) -> None:
    hub, _ = self_signed_hub
    wrong = "sha256:" + "0" * 64
    with pytest.raises(PinMismatch, match="not the pinned"):
        await HubLink.connect(hub.url, hub.master, Role.MASTER, pin=wrong)


async def test_without_a_pin_a_self_signed_certificate_is_not_trusted(self_signed_hub: tuple[TlsHub, str]) -> None:
    hub, _ = self_signed_hub
    with pytest.raises(ssl.SSLCertVerificationError):
        await HubLink.connect(hub.url, hub.master, Role.MASTER)


async def test_a_pin_refuses_even_a_certificate_signed_by_a_trusted_ca(tmp_path: Path) -> None:
    files, ca_file = _ca_signed(tmp_path)
    other_pin = create_self_signed(TlsFiles.in_data_dir(tmp_path / "other"), ["localhost"], ["127.0.0.1"])
    async for hub in _serve(tmp_path, files):
        trusted = await HubLink.connect(hub.url, hub.master, Role.MASTER, ca_file=str(ca_file))
        await trusted.close()
        with pytest.raises(PinMismatch):
            await HubLink.connect(hub.url, hub.master, Role.MASTER, ca_file=str(ca_file), pin=other_pin)
        pinned = await HubLink.connect(hub.url, hub.master, Role.MASTER, pin=fingerprint(files.cert.read_bytes()))
        await pinned.close()


async def test_a_pin_with_a_plain_url_is_refused_before_connecting() -> None:
    with pytest.raises(PinMismatch, match="does not use TLS"):
        await HubLink.connect(
            "http://127.0.0.1:1", Identity.generate(secrets.token_bytes), Role.MASTER, pin="sha256:00"
        )
