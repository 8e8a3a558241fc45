"""DICOM TLS with DCMTK on the other side: the node's SCP takes TLS storescu, deliveries reach TLS storescp.

A throwaway CA signs the node's, the scanner's and the PACS's certificates; a second CA plays the stranger.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select, update

from node.config import DestinationConfig, TlsConfig
from node.db import AuditEvent, Database, Delivery, DeliveryState, Instance, open_database
from node.deliver.attempt import deliver
from node.receive.slots import LocalCounter
from node.receive.scp import Receiver
from tests.support.node_state import build_state, make_settings
from tests.support.dcmtk import DCMTK_ENV
from tests.support.dicom_factory import write_series
from tests.support.node_process import free_port

pytestmark = pytest.mark.timeout(120)


@dataclass
class Pki:
    ca: Path
    node: tuple[Path, Path]  # (key, certificate)
    scanner: tuple[Path, Path]
    pacs: tuple[Path, Path]
    stranger: tuple[Path, Path]  # signed by another CA


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, name: str, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _ca(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca: tuple[rsa.RSAPrivateKey, x509.Certificate], common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca[1].subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca[0], hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = _ca("pacsnode test CA"), _ca("stranger CA")
    (folder / "ca.crt").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=folder / "ca.crt",
        node=_write(folder, "node", *_leaf(ca, "pacsnode")),
        scanner=_write(folder, "scanner", *_leaf(ca, "scanner")),
        pacs=_write(folder, "pacs", *_leaf(ca, "pacs")),
        stranger=_write(folder, "stranger", *_leaf(other, "stranger")),
    )


def _tls_config(pki: Pki) -> TlsConfig:
    return TlsConfig(enabled=True, certificate=pki.node[1], private_key=pki.node[0], ca_certificates=pki.ca,
                     require_client_certificate=True)


@pytest.fixture
def tls_receiver(tmp_path: Path, pki: Pki) -> Iterator[tuple[int, Database]]:
    """The node's SCP (the real Receiver) on a free port with TLS and client certificates required."""
    settings = make_settings(tmp_path / "storage")
    settings.node.host, settings.node.port = "127.0.0.1", free_port()
    settings.node.tls = _tls_config(pki)
    (tmp_path / "storage").mkdir()
    database = open_database(settings.node.resolved_database_url())
    receiver = Receiver(settings, database, LocalCounter())
    _, port = receiver.start()
    yield port, database
    receiver.stop()
    database.dispose()


def _storescu(port: int, files: list[Path], tls: list[str]) -> subprocess.CompletedProcess:
    command = ["storescu", *tls, "-aet", "SCANNER", "-aec", "PACSNODE", "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, env=DCMTK_ENV, capture_output=True, text=True, timeout=60)


def _stored(database: Database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


def test_scp_accepts_tls_from_a_trusted_scanner_only(tls_receiver, pki: Pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, database = tls_receiver
    files = write_series(tmp_path / "series", 3)
    trusted = ["+tls", str(pki.scanner[0]), str(pki.scanner[1]), "-pw", "+cf", str(pki.ca)]
    result = _storescu(port, files, trusted)
    assert result.returncode == 0, result.stderr
    assert _stored(database) == 3
    plain = _storescu(port, write_series(tmp_path / "plain", 1), [])
    assert plain.returncode != 0
    stranger = ["+tls", str(pki.stranger[0]), str(pki.stranger[1]), "-pw", "+cf", str(pki.ca)]
    assert _storescu(port, write_series(tmp_path / "stranger", 1), stranger).returncode != 0
    assert _stored(database) == 3  # neither got anything in
    assert _storescu(port, write_series(tmp_path / "again", 2), trusted).returncode == 0  # still serving
    assert _stored(database) == 5


@pytest.fixture
def tls_pacs(tmp_path: Path, pki: Pki) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp with TLS, requiring a client certificate from the test CA."""
    port, out = free_port(), tmp_path / "pacs"
    out.mkdir()
    command = ["storescp", "+tls", str(pki.pacs[0]), str(pki.pacs[1]), "-pw", "+cf", str(pki.ca), "-rc",
               "-aet", "PACS", "-pm", "-od", str(out), str(port)]
    process = subprocess.Popen(command, env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
    yield port, out
    process.terminate()
    process.wait(10)


def test_delivery_reaches_a_tls_destination(tls_pacs, pki: Pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, out = tls_pacs
    state = build_state(tmp_path / "storage")
    state.settings.node.tls = _tls_config(pki)
    state.settings.destinations = [DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=port, tls=True)]
    with state.database.session() as session:
        session.execute(update(Delivery).where(Delivery.destination == "pacs")
                        .values(state=DeliveryState.pending, delivered_at=None, attempts=0))
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.destination == "pacs"))
    counts = deliver(state.settings, state.database, delivery_id)
    assert counts == {"delivered": 1}, counts
    received = list(out.iterdir())
    assert len(received) == 1 and received[0].stat().st_size > 1000
    with state.database.session() as session:
        sent = session.scalars(select(AuditEvent).where(AuditEvent.event == "dicom-instances-sent",
                                                        AuditEvent.destination_ae_title == "PACS")).all()
        assert any(e.outcome == 0 and e.study_uid == state.study_uid for e in sent)
    state.database.dispose()


def test_delivery_to_a_tls_destination_fails_without_trust(tls_pacs, pki: Pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, out = tls_pacs
    state = build_state(tmp_path / "storage")
    state.settings.node.tls = TlsConfig(enabled=True, certificate=pki.stranger[1], private_key=pki.stranger[0],
                                        ca_certificates=pki.ca)
    state.settings.destinations = [DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=port, tls=True)]
    with state.database.session() as session:
        session.execute(update(Delivery).where(Delivery.destination == "pacs")
                        .values(state=DeliveryState.pending, delivered_at=None, attempts=0))
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.destination == "pacs"))
    counts = deliver(state.settings, state.database, delivery_id)
    assert "delivered" not in counts
    assert list(out.iterdir()) == []
    with state.database.session() as session:
        row = session.get(Delivery, delivery_id)
        assert row.state in (DeliveryState.pending, DeliveryState.failed) and row.error
    state.database.dispose()
